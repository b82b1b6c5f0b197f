"""Paged lists: the ``after`` cursor and the page every list answers.

A list answers ``{items, total, total_exact, has_more, next_after, limit, offset}``:
``total`` counts the matching rows up to a cap (``total_exact`` is false when there are more,
so a request never reads a large table to the end), ``has_more`` tells whether rows follow the
page and ``next_after`` — where a list supports keyset paging — is the cursor to pass as
``?after=`` for the next page: it starts right behind this page's last item through the
list's index, however deep the page. ``offset`` stays for shallow pages (at most
:data:`~oma.api.validation.MAX_OFFSET`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
from pydantic import Field

from ..database.repos._select import BadCursor, Page
from .errors import ApiError


def encode_cursor(key: Iterable[Any]) -> str:
    """The opaque ``after`` text of a page key (its ordering columns' JSON values)."""
    raw = orjson.dumps(list(key))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> list[str]:
    """The page key inside an ``after`` cursor; BadCursor when it is not one this API handed
    out."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key = orjson.loads(raw)
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        key = None
    if not (isinstance(key, list) and key and all(isinstance(v, str) for v in key)):
        raise BadCursor("not a next_after value")
    return key


#: ``?after=``: a list's ``next_after`` (its form is checked by :func:`cursor_key`)
Cursor = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1000,
        pattern="^[A-Za-z0-9_-]+$",
        description="the previous page's next_after (keyset paging)",
    ),
]


def page_json(page: Page, items: Any = None, *, limit: int, offset: int) -> dict[str, Any]:
    """The JSON of one page of a list (see the module's documentation): ``items``, or the
    page's own."""
    return {
        "items": page.items if items is None else items,
        "total": page.total,
        "total_exact": page.total_exact,
        "has_more": page.has_more,
        "next_after": encode_cursor(page.after) if page.after is not None else None,
        "limit": limit,
        "offset": offset,
    }


@contextmanager
def cursor_key(after: str | None) -> Iterator[list[str] | None]:
    """The page key inside ``after`` (None without one), for a list read in the ``with``
    block. A cursor that is not one of this list's (another list's, edited, made up) fits
    the schema but is refused: 422 naming ``after``."""
    try:
        yield _decode_cursor(after) if after is not None else None
    except BadCursor as exc:
        message = f"after: is not a cursor of this list ({exc})"
        raise ApiError("unprocessable", message, 422, "after") from None
