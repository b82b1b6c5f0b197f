"""Plain SELECTs for the API's hot read paths, without building a peewee query per call.

Building and rendering a peewee query costs more than running it on an indexed table, so the
list and detail reads of the API write their SQL here: :class:`Where` collects conditions
(column names are the repositories' own, never user input; values are always parameters) and
:func:`rows` turns the result into model instances directly (only the column types that need
it are converted: timestamps, JSON, booleans).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any, TypeVar

from peewee import BooleanField, DateTimeField, FloatField, Model

from ..db import database
from ..fields import JSONField

M = TypeVar("M", bound=Model)
_CONVERTED = (DateTimeField, JSONField, BooleanField, FloatField)


class Where:
    """A conjunction of SQL conditions with their parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def eq(self, column: str, value: Any) -> Where:
        """``column = value``."""
        self.parts.append(f"{column} = {database.param}")
        self.params.append(value)
        return self

    def is_in(self, column: str, values: Iterable[Any], *, negate: bool = False) -> Where:
        """``column IN (values…)`` (``NOT IN`` with ``negate``); an empty list matches nothing
        (everything when negated)."""
        values = list(values)
        if not values:
            self.parts.append("1 = 1" if negate else "1 = 0")
            return self
        marks = ", ".join([database.param] * len(values))
        self.parts.append(f"{column} {'NOT IN' if negate else 'IN'} ({marks})")
        self.params.extend(values)
        return self

    def raw(self, condition: str, *params: Any) -> Where:
        """Any condition, with ``{p}`` for each parameter."""
        self.parts.append(condition.format(p=database.param))
        self.params.extend(params)
        return self

    def sql(self) -> str:
        """`` WHERE …`` (empty without conditions)."""
        return " WHERE " + " AND ".join(self.parts) if self.parts else ""


def _quote(name: str) -> str:
    """``name`` as a quoted identifier of the bound database (``"x"``, or ```x``` on MySQL)."""
    chars = database.obj.quote
    return f"{chars[0]}{name}{chars[1]}"


@cache
def _columns(model: type[Model], chars: str) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    """(the SELECT list quoted with ``chars``, the field names, (position, converter) of each
    field whose database value needs converting) of ``model``."""
    fields = model._meta.sorted_fields
    select = ", ".join(f"{chars[0]}{f.column_name}{chars[1]}" for f in fields)
    convert = tuple(
        (i, f.name, f.python_value) for i, f in enumerate(fields) if isinstance(f, _CONVERTED)
    )
    return select, tuple(f.name for f in fields), convert


def instance(model: type[M], data: dict[str, Any]) -> M:
    """A model instance holding ``data`` (field name → Python value), as peewee's own
    cursor wrappers build them (``Model(__no_default__=1)`` then its data), nothing dirty."""
    row = model.__new__(model)
    row.__data__ = data
    row._dirty = set()
    row.__rel__ = {}
    return row


def rows(
    model: type[M],
    where: Where | None = None,
    *,
    order: str = "",
    limit: int | None = None,
    offset: int = 0,
) -> list[M]:
    """Instances of ``model`` matching ``where``, ordered by ``order`` (SQL, e.g.
    ``created_at DESC, id DESC``), at most ``limit`` of them after skipping ``offset``."""
    db = database.obj
    select, names, convert = _columns(model, db.quote)
    sql = f"SELECT {select} FROM {_quote(model._meta.table_name)}"
    params: list[Any] = []
    if where is not None:
        sql += where.sql()
        params.extend(where.params)
    if order:
        sql += " ORDER BY " + order
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
        if offset:
            sql += f" OFFSET {int(offset)}"
    out = []
    for raw in db.execute_sql(sql, params).fetchall():
        data = dict(zip(names, raw, strict=True))
        for i, name, python_value in convert:
            if raw[i] is not None:
                data[name] = python_value(raw[i])
        out.append(instance(model, data))
    return out


def first(model: type[M], where: Where, *, order: str = "") -> M | None:
    """The first instance of ``model`` matching ``where`` (in ``order``), or None."""
    found = rows(model, where, order=order, limit=1)
    return found[0] if found else None


def count(model: type[Model], where: Where | None = None) -> int:
    """How many rows of ``model`` match ``where``."""
    db = database.obj
    sql = f"SELECT COUNT(*) FROM {_quote(model._meta.table_name)}"
    params: Sequence[Any] = ()
    if where is not None:
        sql += where.sql()
        params = where.params
    return int(db.execute_sql(sql, params).fetchone()[0])


def pairs(model: type[Model], key: str, value: str, where: Where) -> dict[Any, Any]:
    """``{key: value}`` of two plain columns of the rows matching ``where``."""
    db = database.obj
    sql = (
        f"SELECT {_quote(key)}, {_quote(value)} FROM {_quote(model._meta.table_name)}" + where.sql()
    )
    return dict(db.execute_sql(sql, where.params).fetchall())
