"""Request models: one source for what a request must satisfy and for its OpenAPI schema.

Each body is a pydantic model (:class:`Body`: unknown fields refused). ``@body(Model)``
validates the request's JSON against the model before the view runs — a failure is a 400
naming the field — puts the validated model in ``g.body`` and documents the model's JSON
schema as the operation's request body. ``@query(Model)`` does the same for query
parameters (``g.query``). Because the OpenAPI document is generated from the very models that
validate, the two cannot drift.

Rules a JSON schema cannot state (a cron expression that parses, a referenced VM that exists)
are checked by the views and answer 422 (:func:`unprocessable`), never 400: a 400 always means
the request breaks its documented schema.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from flask import g, request
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    ValidationError,
)

from .errors import ApiError, invalid
from .paging import Cursor
from .validation import MAX_LIMIT, MAX_OFFSET, json_body

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

# Characters no field may hold: C0 controls, DEL and C1 controls (lone UTF-16 surrogates are
# refused by the JSON parser: a regular expression engine of the JSON schema world cannot
# name them). Free text keeps tab, line feed and carriage return.
_NEVER = "\\x00-\\x1f\\x7f-\\x9f"
_NEVER_IN_TEXT = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"
# blanks as str.strip() sees them, spelled out (regex engines disagree on what \\s means)
_BLANK = "\\x20\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
#: one line with at least one non-blank character (names, ids, hosts)
LINE_PATTERN = f"^[^{_NEVER}]*[^{_NEVER}{_BLANK}][^{_NEVER}]*$"
TEXT_PATTERN = f"^[^{_NEVER_IN_TEXT}]*$"
SECRET_PATTERN = f"^[^{_NEVER}]+$"


def line(max_length: int = 255) -> Any:
    """A one-line, non-blank string of at most ``max_length`` characters (stripped on use)."""
    return Annotated[
        str, StringConstraints(min_length=1, max_length=max_length, pattern=LINE_PATTERN)
    ]


Name = line(100)
Id = line(64)
Line = line(255)
#: a VMware VM id: a UUID (any case, braces allowed) or a managed object id such as vm-42
VmId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern="^ *[!-~]+ *$")]
Text = Annotated[str, StringConstraints(max_length=2000, pattern=TEXT_PATTERN)]
Secret = Annotated[
    str,
    StringConstraints(min_length=1, max_length=4096, pattern=SECRET_PATTERN),
    Field(json_schema_extra={"format": "password", "writeOnly": True}),
]
_URL_REST = "(:[0-9]{1,5})?(/([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$"


def _url(schemes: str) -> Any:
    # RFC 3986 with a DNS name or IPv4 address as host and no user info: ASCII only
    return Annotated[
        str,
        StringConstraints(
            min_length=8, max_length=500, pattern=f"^{schemes}://[A-Za-z0-9.-]+{_URL_REST}"
        ),
        Field(json_schema_extra={"format": "uri"}),
    ]


HttpUrl = _url("https?")
HttpsUrl = _url("https")


def _json_int(value: Any) -> Any:
    # a JSON schema integer is any integral number (2.0 included), never a boolean or a string
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


def int_between(minimum: int, maximum: int) -> Any:
    """A JSON integer (2.0 counts; booleans and strings do not) within bounds."""
    return Annotated[int, Field(ge=minimum, le=maximum), BeforeValidator(_json_int)]


def _none_if_empty(value: Any) -> Any:
    return None if value == "" else value


def optional(kind: Any) -> Any:
    """``kind``, null or "" (a form's empty choice); both read as None."""
    return Annotated[kind | Literal[""] | None, AfterValidator(_none_if_empty)]


class Body(BaseModel):
    """A request body: unknown fields refused, patterns in Python's syntax (surrogates)."""

    model_config = ConfigDict(
        extra="forbid", regex_engine="python-re", strict=True, hide_input_in_errors=True
    )

    def given(self) -> set[str]:
        """The fields the request gave (a PATCH changes only these)."""
        return set(self.model_fields_set)


class NoBody(Body):
    """An action that takes no fields (an empty body or ``{}``)."""


class Query(BaseModel):
    """Query parameters: strings from the URL, integers and booleans converted."""

    model_config = ConfigDict(extra="ignore", regex_engine="python-re", hide_input_in_errors=True)


class PageQuery(Query):
    """``limit`` and ``offset`` of a list (:mod:`oma.api.paging`)."""

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 50
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0


class KeysetPageQuery(PageQuery):
    """A list that also pages by ``after`` (a previous page's ``next_after``)."""

    after: Cursor | None = None


def unprocessable(field: str, message: str) -> ApiError:
    """A 422: the request fits its schema but a rule beyond the schema refuses it."""
    return ApiError("unprocessable", f"{field}: {message}", 422, field)


_UNION_MEMBERS = {
    "int",
    "str",
    "bool",
    "float",
    "list",
    "dict",
    "none",
    "constrained-str",
    "constrained-int",
}


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        # "[key]" of a map, the member of a union ("int", "str", "function-after[...]")
        if part == "[key]" or part in _UNION_MEMBERS or (isinstance(part, str) and "[" in part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _message(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else error["msg"]
    if kind == "string_pattern_mismatch":
        return "must be one non-blank line without control characters"
    if kind in ("int_type", "int_parsing"):
        return "must be an integer"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind == "string_type":
        return "must be a string"
    if kind == "union_tag_invalid":
        return f"type: must be one of {ctx.get('expected_tags')}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return error["msg"].replace("Input should be", "must be")
    return error["msg"].replace("Input should", "must").replace("Value error, ", "")


def _bounds(model: type[BaseModel], error: dict[str, Any]) -> str | None:
    """ "must be between A and B" for a top-level integer field with both bounds."""
    if error["type"] not in ("greater_than_equal", "less_than_equal") or len(error["loc"]) != 1:
        return None
    info = model.model_fields.get(str(error["loc"][0]))
    if info is None:
        return None
    low = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
    high = next((m.le for m in info.metadata if getattr(m, "le", None) is not None), None)
    if low is None or high is None:
        return None
    return f"must be between {low} and {high}"


def validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``; 400 naming the first failing field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        rooted = issubclass(model, RootModel)
        if rooted and first["loc"]:
            first["loc"] = first["loc"][1:]  # the union member's tag
        message = _bounds(model, first) or _message(first)
        # a model-wide rule names its field first: "vm_context_id: give exactly one of ..."
        named = re.match(r"^([a-z_]+): (.+)$", message, re.S)
        if not first["loc"] and named and (rooted or named.group(1) in model.model_fields):
            raise invalid(named.group(1), named.group(2)) from None
        raise invalid(_field(first["loc"]), message) from None


def body(model: type[BaseModel]) -> Callable[[F], F]:
    """Decorator: validate the JSON body as ``model`` into ``g.body``; document it."""

    def mark(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # no body at all reads as {}: "name: is required" says more than "not JSON"
            g.body = validate(model, json_body() if request.get_data().strip() else {})
            return view(*args, **kwargs)

        wrapper.request_model = model  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return mark


def query(model: type[BaseModel]) -> Callable[[F], F]:
    """Decorator: validate the query parameters as ``model`` into ``g.query``; document them."""

    def mark(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.query = validate(model, request.args.to_dict())
            return view(*args, **kwargs)

        wrapper.query_model = model  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return mark
