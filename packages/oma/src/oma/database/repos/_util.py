"""Helpers shared by the repositories: IntegrityError translation, lookups, pagination."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from peewee import IntegrityError, Model, ModelSelect

from ...errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from ._select import Page

M = TypeVar("M", bound=Model)


@contextmanager
def translate_integrity(message: str, *, field: str | None = None) -> Iterator[None]:
    """Turn peewee's IntegrityError (unique/foreign key) into ConflictError(message)."""
    try:
        yield
    except IntegrityError as exc:
        raise ConflictError(message, field=field) from exc


def get_or_raise(model: type[M], id: Any, kind: str) -> M:
    """The row with primary key ``id`` or NotFoundError naming ``kind``."""
    from ._select import Where, first

    row = first(model, Where().eq(model._meta.primary_key.column_name, id))
    if row is None:
        raise NotFoundError(f"{kind} {id} not found", kind=kind, id=str(id))
    return row


def paginate(query: ModelSelect, limit: int, offset: int) -> Page:
    """One page of ``query``'s rows (model instances), its matching rows counted up to
    :data:`~._select.COUNT_CAP` and whether more follow (see :class:`~._select.Page`)."""
    from ._select import COUNT_CAP, Page

    found = list(query.limit(limit + 1).offset(offset))
    if offset == 0 and len(found) <= limit:
        total = len(found)
    else:  # peewee counts a limited query as a subquery: at most COUNT_CAP + 1 rows
        total = query.order_by().limit(COUNT_CAP + 1).offset(None).count()
    return Page.of(found, limit, total)


def update_row(
    model: type[M], id: Any, kind: str, fields: dict[str, Any], *, conflict: str = "name"
) -> M:
    """Update columns of one row (and its updated_at); NotFoundError / ConflictError."""
    from ..fields import now

    row = get_or_raise(model, id, kind)
    if fields:
        values = dict(fields)
        if "updated_at" in model._meta.fields:
            values["updated_at"] = now()
        with translate_integrity(f"another {kind} already uses this {conflict}", field=conflict):
            model.update(**values).where(model._meta.primary_key == row.get_id()).execute()
    return get_or_raise(model, id, kind)
