"""What every request goes through before its request model (:mod:`oma.api.requests`): the
strict JSON body parser, the path and query character check, a VM id's canonical form, and
the list bounds. Every failure is a 400 naming the field."""

from __future__ import annotations

from typing import Any

from flask import request

from migration_common import ContractError, bad_character, parse_json_body

from .errors import ApiError, invalid

MAX_LIMIT = 500
#: the deepest ``offset`` a list takes: it is read and skipped row by row, so deeper pages
#: follow ``next_after`` (keyset paging through the list's index) instead
MAX_OFFSET = 10_000


def json_body() -> dict[str, Any]:
    """The request's JSON object, or 400 when the body is not a JSON object (or nests too
    deep, or holds a lone surrogate or a control character: the error names the field)."""
    try:
        data = parse_json_body(request.get_data(cache=True))
    except ContractError as exc:
        if exc.field == "body":
            raise ApiError("invalid_json", f"the request body {exc.reason}", 400) from None
        raise invalid(exc.field or "body", exc.reason) from None
    if not isinstance(data, dict):
        raise ApiError("invalid_json", "the request body must be a JSON object", 400)
    return data


def reject_bad_characters() -> None:
    """before_request: 400 when the path or a query parameter holds a control character or a
    lone surrogate (ids reach vCenter, CloudStack and logs verbatim)."""
    problem = bad_character(request.path)
    if problem:
        raise ApiError("invalid_path", f"the request path {problem}", 400, "path")
    for name, value in request.args.items(multi=True):
        problem = bad_character(name) or bad_character(value)
        if problem:
            raise invalid(name if not bad_character(name) else "query", problem)


def vm_id(value: Any, name: str) -> str:
    """A VMware VM id in canonical form (:func:`migration_common.canonical_vm_id`: a UUID in
    lower case); 400 naming ``name`` when it is not a string, empty or has control characters."""
    from migration_common import canonical_vm_id

    try:
        return canonical_vm_id(value)
    except ValueError as exc:
        raise invalid(name, str(exc)) from None
