"""Strict parsing of JSON request bodies, shared by both APIs.

``json.loads`` accepts documents an API must refuse before they reach its code: nesting deep
enough to exhaust the interpreter's recursion limit (a 500), lone UTF-16 surrogates (``"\\ud800"``,
a ``str`` that cannot be encoded, so it fails later in a database driver or a log line), and
control characters that end up in vCenter calls or terminals. :func:`parse_json_body` refuses
them with a :class:`ContractError` naming the offending field (a dotted path).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._errors import ContractError

MAX_DEPTH = 32
# C0 controls except tab, line feed and carriage return; DEL; C1 controls; lone surrogates
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def bad_character(text: str) -> str | None:
    """A description of the first character an API refuses in ``text``, or None."""
    found = _BAD.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        return f"contains a lone UTF-16 surrogate (U+{code:04X})"
    return f"contains a control character (U+{code:04X})"


def _check(value: Any, path: str, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise ContractError(f"nests deeper than {max_depth} levels", path or "body")
    if isinstance(value, str):
        problem = bad_character(value)
        if problem:
            raise ContractError(problem, path or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            problem = bad_character(key)
            if problem:
                raise ContractError(f"a key {problem}", path or "body")
            _check(item, where, depth + 1, max_depth)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1, max_depth)


def parse_json_body(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The decoded JSON document ``raw``; ContractError (field ``body`` or the bad field's
    dotted path) for malformed JSON, nesting over ``max_depth``, lone surrogates or control
    characters other than tab, line feed and carriage return."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise ContractError("is not valid UTF-8", "body") from None
    # cheap pre-check: deeper bracket nesting than allowed is refused before json.loads
    # recurses into it (a million '[' would otherwise exhaust the recursion limit)
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth + 1:
                    raise ContractError(f"nests deeper than {max_depth} levels", "body")
        elif char in "]}":
            depth -= 1
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ContractError(f"is not valid JSON ({exc})", "body") from None
    _check(value, "", 0, max_depth)
    return value
