"""Plain SELECTs for the API's hot read paths, without building a peewee query per call.

Building and rendering a peewee query costs more than running it on an indexed table, so the
list and detail reads of the API write their SQL here: :class:`Where` collects conditions
(column names are the repositories' own, never user input; values are always parameters) and
:func:`rows` turns the result into model instances directly (only the column types that need
it are converted: timestamps, JSON, booleans). Lists read JSON-ready dicts instead
(:func:`records`, :func:`page`: no model instances, no datetimes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from peewee import BooleanField, DateTimeField, FloatField, Model

from ..db import database
from ..fields import JSONField, UtcDateTimeField

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


@cache
def _projection(
    model: type[Model], columns: tuple[tuple[str, str], ...], extra: tuple[str, ...], chars: str
) -> tuple[str, Any]:
    """(the SELECT list, a function turning one result row into its dict) of ``columns`` —
    (key, field name) pairs — read as JSON-ready values: timestamps become RFC 3339 text
    (:func:`utc_text`), booleans ``bool`` and JSON documents Python values; every other value
    is the driver's own (floats come back as floats from REAL/DOUBLE columns on all three).
    The keys ``extra`` read the values of extra SELECT expressions that follow the columns.

    The function is generated once per projection, a single dict display reading the row by
    position: per row and column, that is the least work Python can do.
    """
    fields = [model._meta.fields[name] for _, name in columns]
    select = ", ".join(f"{chars[0]}{f.column_name}{chars[1]}" for f in fields)
    parts = []
    for i, ((key, _), f) in enumerate(zip(columns, fields, strict=True)):
        if isinstance(f, DateTimeField):
            value = f"_ts(v) if (v := r[{i}]) is not None else None"
        elif isinstance(f, BooleanField):
            value = f"bool(v) if (v := r[{i}]) is not None else None"
        elif isinstance(f, JSONField):
            value = f"_json(v) if (v := r[{i}]) is not None else None"
        else:
            value = f"r[{i}]"
        parts.append(f"{key!r}: {value}")
    parts += [f"{key!r}: r[{len(columns) + j}]" for j, key in enumerate(extra)]
    source = "def read(r):\n    return {" + ", ".join(parts) + "}\n"
    scope: dict[str, Any] = {"_ts": utc_text, "_json": JSONField().python_value}
    exec(compile(source, f"<{model.__name__} projection>", "exec"), scope)
    return select, scope["read"]


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
    sql = f"SELECT {select or _columns(model, db.quote)[0]} FROM {_quote(model._meta.table_name)}"
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
    return db.execute_sql(sql, params).fetchall()


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


def records(
    model: type[Model],
    columns: Sequence[tuple[str, str]],
    where: Where | None = None,
    *,
    order: str = "",
    limit: int | None = None,
    offset: int = 0,
    extra: Sequence[tuple[str, str, Sequence[Any]]] = (),
) -> list[dict[str, Any]]:
    """Rows of ``model`` as JSON-ready dicts: ``columns`` are (key, field name) pairs — the
    dict's keys and the fields read, in that order (a field may be read under two keys) —
    and timestamps come as RFC 3339 UTC text (``2024-01-01T00:00:00Z``). ``extra`` adds
    (key, SQL expression, its parameters) read in the same statement — a scalar subquery
    such as the row's VM name, instead of a query of its own. For read-only lists: building
    model instances and datetimes costs more than the query itself."""
    keys = tuple(key for key, _, _ in extra)
    select, read = _projection(model, tuple(columns), keys, database.obj.quote)
    select += "".join(f", {sql}" for _, sql, _ in extra)
    params = [p for _, _, ps in extra for p in ps]
    return [read(raw) for raw in _query(model, where, order, limit, offset, select, params)]


def utc_text(value: Any) -> str:
    """RFC 3339 text of a stored UTC timestamp as the driver returns it: SQLite's
    ``YYYY-MM-DD HH:MM:SS[.ffffff]`` text, or a naive (UTC) datetime from PostgreSQL/MariaDB.
    The same text :func:`oma.api.serialize.ts` makes of the converted value."""
    if isinstance(value, str):
        if len(value) in (19, 26) and value[10] == " ":
            return f"{value[:10]}T{value[11:]}Z"
        value = UtcDateTimeField().python_value(value)  # any other stored form
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    raise TypeError(f"not a timestamp: {value!r}")


def first(model: type[M], where: Where, *, order: str = "") -> M | None:
    """The first instance of ``model`` matching ``where`` (in ``order``), or None."""
    found = rows(model, where, order=order, limit=1)
    return found[0] if found else None


def count(model: type[Model], where: Where | None = None, *, cap: int | None = None) -> int:
    """How many rows of ``model`` match ``where``; with ``cap``, counting stops after ``cap + 1``
    (so a larger table is never read to the end just to be counted)."""
    db = database.obj
    inner = f"FROM {_quote(model._meta.table_name)}"
    params: Sequence[Any] = ()
    if where is not None:
        inner += where.sql()
        params = where.params
    if cap is None:
        sql = f"SELECT COUNT(*) {inner}"
    else:
        sql = f"SELECT COUNT(*) FROM (SELECT 1 AS one {inner} LIMIT {int(cap) + 1}) counted"
    return int(db.execute_sql(sql, params).fetchone()[0])


#: a list's ``total`` counts at most this many rows (more: ``total_exact`` is false)
COUNT_CAP = 1000
_TOTAL = "\0total"  # the key a page's count is read under (taken off each item)


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
        return cls(
            items=items,
            total=min(count, COUNT_CAP),
            total_exact=count <= COUNT_CAP,
            has_more=more,
            after=tuple(last[k] for k in key) if last is not None else None,
        )


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


def page(
    model: type[Model],
    columns: Sequence[tuple[str, str]],
    where: Where,
    *,
    order: Sequence[str],
    descending: bool = False,
    limit: int,
    offset: int = 0,
    after: Sequence[Any] | None = None,
    extra: Sequence[tuple[str, str, Sequence[Any]]] = (),
) -> Page:
    """A page of :func:`records` (``columns``) of ``model`` matching ``where`` in the order of
    the columns ``order`` (all ascending, or all ``descending``; the last one unique, e.g.
    ``id``; each read by ``columns`` too).

    ``after`` (the key of the previous page's last item, :attr:`Page.after`) starts the page
    right behind that item through the ordering index — keyset paging, which never reads the
    rows before it, however deep the page — and ``offset`` skips rows after that. Reads at most
    ``offset + limit + 1`` rows and counts at most :data:`COUNT_CAP` + 1, in one statement
    (the count is a scalar subquery; ``extra`` as for :func:`records`).
    """
    key_of = {name: key for key, name in reversed(columns)}  # the first key reading a field
    names = [key_of.get(model._meta.columns[c].name) for c in order]
    if None in names:
        raise ValueError(f"the columns of a page must read its order columns {list(order)}")
    rows_where = Where()
    rows_where.parts, rows_where.params = list(where.parts), list(where.params)
    if after is not None:
        values = _key_values(model, order, after)
        # (a, b) > (x, y) spelled so each database seeks the index on its first column:
        # a >= x AND (a > x OR b > y)  — for two columns; longer keys nest the same way
        op = "<" if descending else ">"
        rows_where.raw(f"{order[0]} {op}= {{p}}", values[0])
        rows_where.raw(_after(order, op), *_after_params(values))
    direction = " DESC" if descending else ""
    counted = (
        f"(SELECT COUNT(*) FROM (SELECT 1 AS one FROM {_quote(model._meta.table_name)}"
        f"{where.sql()} LIMIT {COUNT_CAP + 1}) counted)"
    )
    found = records(
        model,
        columns,
        rows_where,
        order=", ".join(c + direction for c in order),
        limit=limit + 1,
        offset=offset,
        extra=(*extra, (_TOTAL, counted, where.params)),
    )
    for item in found:
        total = item.pop(_TOTAL)
    if not found:  # nothing came back to carry the count
        empty = offset == 0 and after is None
        total = 0 if empty else count(model, where, cap=COUNT_CAP)
    return Page.of(found, limit, total, names)


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
    sql = (
        f"SELECT {_quote(key)}, {_quote(value)} FROM {_quote(model._meta.table_name)}" + where.sql()
    )
    return dict(db.execute_sql(sql, where.params).fetchall())
