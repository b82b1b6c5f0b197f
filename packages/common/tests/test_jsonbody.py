"""Strict JSON bodies: what both APIs refuse before their code sees it, naming the field."""

from __future__ import annotations

import pytest

from migration_common import ContractError, parse_json_body


def test_plain_documents_pass():
    assert parse_json_body(b'{"name": "web-01", "tags": ["a\\tb"], "n": {"x": 1}}') == {
        "name": "web-01",
        "tags": ["a\tb"],
        "n": {"x": 1},
    }


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b"{" + b'"a":[' * 100_000, "body", "nests deeper than 32 levels"),
        (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", "body", "nests deeper"),
        (b'{"name": "a\\ud800b"}', "name", "lone UTF-16 surrogate (U+D800)"),
        (b'{"vm_ids": ["ok", "x\\u0001y"]}', "vm_ids[1]", "control character (U+0001)"),
        (b'{"spec": {"note": "\\u009b"}}', "spec.note", "control character (U+009B)"),
        (b'{"a": 1', "body", "is not valid JSON"),
        (b'"\xff"', "body", "not valid UTF-8"),
    ],
)
def test_refused_with_the_field_named(raw, field, words):
    with pytest.raises(ContractError) as err:
        parse_json_body(raw)
    assert err.value.field == field
    assert words in str(err.value)


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert parse_json_body('{"a": "' + "[" * 100 + '"}') == {"a": "[" * 100}
