"""Request validation helpers: every failure is a 400 naming the field."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import request

from migration_common import ContractError, bad_character, parse_json_body

from .errors import ApiError, invalid

E = TypeVar("E", bound=Enum)
MAX_LIMIT = 500
MAX_OFFSET = 2**31 - 1  # past any table's size, within every database's integer range


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


def string(
    data: dict[str, Any],
    name: str,
    *,
    required: bool = True,
    max_length: int = 255,
    default: str | None = None,
) -> str | None:
    """A non-empty string field (stripped)."""
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise invalid(name, "is required")
        return default
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    value = value.strip()
    if len(value) > max_length:
        raise invalid(name, f"must be at most {max_length} characters")
    return value


def secret(data: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A secret string (not stripped, never echoed in messages)."""
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise invalid(name, "is required")
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    return value


def boolean(data: dict[str, Any], name: str, default: bool = False) -> bool:
    """A JSON boolean field."""
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise invalid(name, "must be true or false")
    return value


def choice(data: dict[str, Any], name: str, enum: type[E], default: E | None = None) -> E:
    """A field whose value is one of ``enum``'s values."""
    value = data.get(name)
    if value is None:
        if default is None:
            raise invalid(name, "is required")
        return default
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)
        raise invalid(name, f"must be one of {allowed}") from None


def http_url(data: dict[str, Any], name: str) -> str:
    """An http(s) URL with a host."""
    value = string(data, name, max_length=500)
    assert value is not None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(name, "must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise invalid(name, "must not contain credentials; send them in their own fields")
    return value.rstrip("/")


def vm_id(value: Any, name: str) -> str:
    """A VMware VM id in canonical form (:func:`migration_common.canonical_vm_id`: a UUID in
    lower case); 400 naming ``name`` when it is not a string, empty or has control characters."""
    from migration_common import canonical_vm_id

    try:
        return canonical_vm_id(value)
    except ValueError as exc:
        raise invalid(name, str(exc)) from None


def string_list(data: dict[str, Any], name: str) -> list[str]:
    """A non-empty list of non-empty strings."""
    value = data.get(name)
    if not isinstance(value, list) or not value:
        raise invalid(name, "must be a non-empty list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise invalid(f"{name}[{i}]", "must be a non-empty string")
        out.append(item.strip())
    return out


def no_unknown(data: dict[str, Any], allowed: Iterable[str]) -> None:
    """400 for a field the endpoint does not know (typos never pass silently)."""
    known = set(allowed)
    for key in data:
        if key not in known:
            raise invalid(key, "unknown field")


def query_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer query parameter within bounds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, "must be an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise invalid(name, f"must be {bound}")
    return value


def page() -> tuple[int, int]:
    """(limit, offset) from the query string (limit 1 to 500, default 50)."""
    return (
        query_int("limit", 50, minimum=1, maximum=MAX_LIMIT),
        query_int("offset", 0, maximum=MAX_OFFSET),
    )


def query_bool(name: str) -> bool | None:
    """A true/false query parameter, or None when absent."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise invalid(name, "must be true or false")
