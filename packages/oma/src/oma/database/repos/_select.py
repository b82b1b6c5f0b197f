"""Plain SELECTs for the API's hot read paths, without building a peewee query per call.

Building and rendering a peewee query costs more than running it on an indexed table, so the
list and detail reads of the API write their SQL here: :class:`Where` collects conditions
(column names are the repositories' own, never user input; values are always parameters) and
:func:`rows` turns the result into model instances directly (only the column types that need
it are converted: timestamps, JSON, booleans). Pages of lists are rendered as JSON by the
database itself (:mod:`._documents`); :class:`Page` and :func:`keyset` are shared by both.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from peewee import BooleanField, DateTimeField, FloatField, Model, PostgresqlDatabase

from ..db import database
from ..fields import JSONField

M = TypeVar("M", bound=Model)
_CONVERTED = (DateTimeField, JSONField, BooleanField, FloatField)


#: the statements prepared on each PostgreSQL connection: {connection: {SQL text: name}}
_PREPARED: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()
_PREPARED_PER_CONNECTION = 256
_PLACEHOLDER = re.compile(r"%s")


def execute(sql: str, params: Sequence[Any] = ()) -> Any:
    """Run one read statement of this module (``%s`` placeholders); return its cursor.

    On PostgreSQL each text is prepared once per connection (``PREPARE``) and then run with
    ``EXECUTE``: the server parses it once and, after a few runs, keeps a generic plan instead
    of planning every request's statement again (about 0.3 ms for a page of a list). Other
    databases run the text as it is.
    """
    db = database.obj
    # inside a transaction a failed PREPARE would abort it: there the text runs as it is
    if not isinstance(db, PostgresqlDatabase) or "%%" in sql or db.in_transaction():
        return db.execute_sql(sql, params)
    conn = db.connection()  # a connection serves one thread at a time
    with _PREPARED_LOCK:
        names = _PREPARED.setdefault(conn, {})
    name = names.get(sql)
    if name is None:
        name = names[sql] = _prepare(db, sql, len(names))
    if not name:
        return db.execute_sql(sql, params)
    args = f"({', '.join(['%s'] * len(params))})" if params else ""
    return db.execute_sql(f"EXECUTE {name}{args}", params)


def _prepare(db: Any, sql: str, index: int) -> str:
    """The name ``sql`` is prepared under as the connection's statement number ``index``, or
    "" when it is not prepared (too many statements on the connection already, or a parameter
    whose type the server cannot infer)."""
    if index >= _PREPARED_PER_CONNECTION:
        return ""
    name = f"oma_read_{index}"
    numbered = iter(range(1, sql.count("%s") + 1))
    text = _PLACEHOLDER.sub(lambda _: f"${next(numbered)}", sql)
    try:
        db.execute_sql(f"PREPARE {name} AS {text}")
    except Exception:  # the driver's error: the text still runs unprepared
        return ""
    return name


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


def quote(name: str) -> str:
    """``name`` as a quoted identifier of the bound database (``"x"``, or ```x``` on MySQL)."""
    chars = database.obj.quote
    return f"{chars[0]}{name}{chars[1]}"


@cache
def _columns(model: type[Model], chars: str) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    """(the SELECT list quoted with ``chars``, the field names, (position, name, converter) of
    each field whose database value needs converting) of ``model``."""
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


def _query(
    model: type[Model],
    where: Where | None,
    order: str,
    limit: int | None,
    offset: int,
    select: str | None = None,
    select_params: Sequence[Any] = (),
) -> list[tuple[Any, ...]]:
    """The raw result rows of one SELECT of ``model`` (every column, or ``select`` with the
    parameters ``select_params``)."""
    db = database.obj
    sql = f"SELECT {select or _columns(model, db.quote)[0]} FROM {quote(model._meta.table_name)}"
    params: list[Any] = list(select_params)
    if where is not None:
        sql += where.sql()
        params.extend(where.params)
    if order:
        sql += " ORDER BY " + order
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
        if offset:
            sql += f" OFFSET {int(offset)}"
    return execute(sql, params).fetchall()


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
    names, convert = _columns(model, database.obj.quote)[1:]
    out = []
    for raw in _query(model, where, order, limit, offset):
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


#: a list's ``total`` counts at most this many rows (more: ``total_exact`` is false)
COUNT_CAP = 1000


def capped_count(table: str, where_sql: str, cap: int) -> str:
    """A SQL expression: how many rows of ``table`` (quoted) match ``where_sql`` (`` WHERE …``,
    or empty; its parameters are needed twice, in order), counted up to ``cap`` — ``cap + 1``
    when more match. Past the cap, one probe through an index says so: no count reads more
    than ``cap`` rows (counting a limited subquery instead costs the databases more per row
    than stepping past the rows)."""
    return (
        f"CASE WHEN EXISTS (SELECT 1 FROM {table}{where_sql} LIMIT 1 OFFSET {int(cap)}) "
        f"THEN {int(cap) + 1} ELSE (SELECT COUNT(*) FROM {table}{where_sql}) END"
    )


@dataclass(frozen=True)
class Page:
    """One page of a list: its items, the matching rows counted up to :data:`COUNT_CAP`
    (``total_exact`` false when there are more), and whether rows follow the page
    (``after``: the ordering key of its last item, for keyset paging, when they do)."""

    items: list[Any]
    total: int
    total_exact: bool
    has_more: bool
    after: tuple[Any, ...] | None = None

    @classmethod
    def of(cls, found: list[Any], limit: int, count: int, key: Sequence[str] = ()) -> Page:
        """The page of ``found`` — up to ``limit + 1`` rows read, the one past ``limit``
        only telling that more follow — with ``count`` matching rows (counted up to at least
        :data:`COUNT_CAP` + 1); ``key``: the item keys of the ordering columns, for
        :attr:`after`."""
        more = len(found) > limit
        items = found[:limit]
        last = items[-1] if items and more and key else None
        after = tuple(last[k] for k in key) if last is not None else None
        return cls.counted(items, count, more=more, after=after)

    @classmethod
    def counted(
        cls, items: Any, count: int, *, more: bool, after: tuple[Any, ...] | None = None
    ) -> Page:
        """The page of ``items`` with ``count`` matching rows (counted up to at least
        :data:`COUNT_CAP` + 1)."""
        return cls(items, min(count, COUNT_CAP), count <= COUNT_CAP, more, after)


class BadCursor(ValueError):
    """An ``after`` key that does not fit the list's ordering columns."""


def _key_values(model: type[Model], columns: Sequence[str], key: Sequence[Any]) -> list[Any]:
    """The database values of a page key given as its JSON values (timestamps as RFC 3339)."""
    if len(key) != len(columns):
        raise BadCursor(f"expected {len(columns)} values")
    out = []
    for column, value in zip(columns, key, strict=True):
        field = model._meta.columns[column]
        if not isinstance(value, str):
            raise BadCursor(f"{column} must be text")
        if isinstance(field, DateTimeField):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError as exc:
                raise BadCursor(f"{column} is not a timestamp") from exc
        out.append(field.db_value(value))
    return out


def keyset(
    where: Where,
    model: type[Model],
    order: Sequence[str],
    after: Sequence[Any],
    *,
    descending: bool = False,
) -> None:
    """Add to ``where`` the rows that follow the key ``after`` (the JSON values of the
    columns ``order`` of the previous page's last item) in that order."""
    values = _key_values(model, order, after)
    # (a, b) > (x, y) spelled so each database seeks the index on its first column:
    # a >= x AND (a > x OR (a = x AND b > y))  — longer keys nest the same way
    op = "<" if descending else ">"
    where.raw(f"{order[0]} {op}= {{p}}", values[0])
    where.raw(_after(order, op), *_after_params(values))


def _after(columns: Sequence[str], op: str) -> str:
    """``c1 op x1 OR (c1 = x1 AND (c2 op x2 OR (…)))`` with ``{p}`` placeholders."""
    head, *rest = columns
    if not rest:
        return f"{head} {op} {{p}}"
    return f"({head} {op} {{p}} OR ({head} = {{p}} AND {_after(rest, op)}))"


def _after_params(values: Sequence[Any]) -> list[Any]:
    """The parameters of :func:`_after` for ``values``."""
    head, *rest = values
    return [head] if not rest else [head, head, *_after_params(rest)]


def pairs(model: type[Model], key: str, value: str, where: Where) -> dict[Any, Any]:
    """``{key: value}`` of two plain columns of the rows matching ``where``."""
    db = database.obj
    sql = f"SELECT {quote(key)}, {quote(value)} FROM {quote(model._meta.table_name)}" + where.sql()
    return dict(db.execute_sql(sql, where.params).fetchall())
