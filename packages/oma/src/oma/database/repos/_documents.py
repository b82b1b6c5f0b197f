"""JSON built by the database: a page of a list as one JSON text, read in one statement.

Reading a page row by row costs the API far more than the query itself: each row is a step
of the driver (Python's ``sqlite3`` lets other request threads take the GIL at every one),
and each value becomes a Python object that is then converted and encoded again. Here the
database renders every item as a JSON object and joins the page into one array, so a page
is a single row whose text goes into the response as it is (:class:`JsonText`).

A document is a sequence of (key, :class:`Value`) pairs (:func:`fields` makes them from a
model's fields). Each value is rendered as the API's Python serializers render the same
column: timestamps as RFC 3339 UTC text (``2024-01-01T00:00:00[.ffffff]Z``), booleans as
``true``/``false``, JSON columns as their documents (an empty column as ``null``). Each
database uses its own functions: SQLite's JSON1 (``json_object``; the page joined with
``group_concat`` in the order of its subquery), PostgreSQL's ``json_build_object`` and
``json_agg``, MariaDB's ``JSON_OBJECT`` and ``JSON_ARRAYAGG``.

Every SQL text here is built from the models' own table and column names and constants of
the code, never from user input; values are parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from peewee import BooleanField, DateTimeField, Model, MySQLDatabase, PostgresqlDatabase

from ..db import database
from ..fields import JSONField
from ._select import COUNT_CAP, Page, Where, capped_count, execute, keyset, quote

#: how a :class:`Value` is rendered
PLAIN, TIMESTAMP, BOOLEAN, JSON, DOCUMENT = "plain", "timestamp", "boolean", "json", "document"


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: documents are built once
class Value:
    """One value of a document: a SQL expression over the row, and how it is rendered —
    :data:`PLAIN` (a number or text as it is), :data:`TIMESTAMP` (a stored UTC timestamp),
    :data:`BOOLEAN`, :data:`JSON` (text holding a JSON document) or :data:`DOCUMENT` (an
    expression that is JSON already, such as :func:`nested`)."""

    sql: str
    kind: str = PLAIN


Document = Sequence[tuple[str, Value]]


class JsonText:
    """JSON the database wrote, to go into a response as it is (the API's encoder embeds
    it as an :class:`orjson.Fragment`; not a dataclass, which orjson would encode itself)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"JsonText({self.text!r})"


def column(model: type[Model], name: str) -> str:
    """The column of field ``name`` of ``model``, qualified by its table."""
    field = model._meta.fields[name]
    return f"{quote(model._meta.table_name)}.{quote(field.column_name)}"


def fields(model: type[Model], columns: Sequence[tuple[str, str]]) -> list[tuple[str, Value]]:
    """The document of ``columns`` — (key, field name) pairs — of ``model``, each rendered
    by its field's type."""
    out = []
    for key, name in columns:
        field = model._meta.fields[name]
        if isinstance(field, DateTimeField):
            kind = TIMESTAMP
        elif isinstance(field, BooleanField):
            kind = BOOLEAN
        elif isinstance(field, JSONField):
            kind = JSON
        else:
            kind = PLAIN
        out.append((key, Value(column(model, name), kind)))
    return out


def literal(text: str) -> str:
    """A constant of the code (an enum value, a key) as a SQL string literal."""
    if not text.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"not a plain constant: {text!r}")
    return f"'{text}'"


class _Dialect:
    """The JSON functions of one database."""

    def render(self, value: Value) -> str:
        """``value`` as an expression the database embeds in a JSON object as such."""
        sql = value.sql
        if value.kind == TIMESTAMP:
            return self.timestamp(sql)
        if value.kind == BOOLEAN:
            return self.boolean(sql)
        if value.kind == JSON:
            return self.json(sql)
        return sql

    def object(self, document: Document) -> str:
        """A JSON object of ``document``."""
        pairs = ", ".join(f"{literal(k)}, {self.render(v)}" for k, v in document)
        return f"{self.object_function}({pairs})"

    object_function = "json_object"

    def timestamp(self, sql: str) -> str:
        raise NotImplementedError

    def boolean(self, sql: str) -> str:
        raise NotImplementedError

    def json(self, sql: str) -> str:
        raise NotImplementedError

    def aggregate(self, expr: str, order: str) -> str:
        """An aggregate joining ``expr`` (a JSON object) over the rows, in ``order``, into a
        JSON array as text (``[]`` without rows)."""
        raise NotImplementedError

    def text(self, query: str) -> str:
        """The scalar subquery ``query`` (one JSON value) as text."""
        return f"({query})"

    def nested(self, expr: str, table: str, condition: str, order: str, index: str) -> str:
        """A scalar subquery: the JSON array of ``expr`` over the rows of ``table`` matching
        ``condition``, in ``order`` (the order of ``table``'s index ``index``, if it has
        one: the empty string when not), as a JSON value of the enclosing object."""
        raise NotImplementedError


class _Sqlite(_Dialect):
    # timestamps are stored as "YYYY-MM-DD HH:MM:SS[.ffffff]" text
    def timestamp(self, sql: str) -> str:
        return f"replace({sql}, ' ', 'T') || 'Z'"

    # json('true') has constant arguments: SQLite evaluates it once per statement, not per row
    def boolean(self, sql: str) -> str:
        return f"CASE WHEN ({sql}) THEN json('true') WHEN NOT ({sql}) THEN json('false') END"

    def json(self, sql: str) -> str:
        return f"json(NULLIF({sql}, ''))"

    # objects are text once they leave their SELECT: joining them needs no parsing, and
    # group_concat keeps the order of the rows of the subquery it reads
    def aggregate(self, expr: str, order: str) -> str:
        return f"COALESCE('[' || group_concat({expr}, ',') || ']', '[]')"

    def nested(self, expr: str, table: str, condition: str, order: str, index: str) -> str:
        if index and _subtypes_cross_subqueries():
            # the rows in the index's order, each object joined as JSON (its subtype says so)
            # into the array, which keeps its own subtype through the scalar subquery: no sort,
            # no JSON parsed again
            rows = f"FROM {table} INDEXED BY {index} WHERE {condition}"
            return f"(SELECT json_group_array({expr}) {rows})"
        inner = f"SELECT {expr} AS nested_item FROM {table} WHERE {condition} ORDER BY {order}"
        return f"json((SELECT {self.aggregate('nested_item', '')} FROM ({inner}) nested))"


@lru_cache(maxsize=1)
def _subtypes_cross_subqueries() -> bool:
    """Whether this SQLite keeps a JSON value's subtype through a scalar subquery (3.40.1,
    the version tested here, does; without it, a nested array would be embedded as a string)."""
    probe = "SELECT json_object('a', (SELECT json_group_array(json_object('b', 1))))"
    return database.obj.execute_sql(probe).fetchone()[0] == '{"a":[{"b":1}]}'


class _Postgresql(_Dialect):
    object_function = "json_build_object"

    # one to_char (the costly part), its ".000000" dropped as Python's isoformat drops it
    def timestamp(self, sql: str) -> str:
        text = f"""to_char({sql}, 'YYYY-MM-DD"T"HH24:MI:SS.US')"""
        return f"replace({text}, '.000000', '') || 'Z'"

    def boolean(self, sql: str) -> str:
        return sql

    def json(self, sql: str) -> str:
        return f"NULLIF({sql}, '')::json"

    def aggregate(self, expr: str, order: str) -> str:
        return f"COALESCE(json_agg({expr} ORDER BY {order}), '[]')::text"

    def text(self, query: str) -> str:
        return f"({query})::text"

    def nested(self, expr: str, table: str, condition: str, order: str, index: str) -> str:
        aggregate = f"COALESCE(json_agg({expr} ORDER BY {order}), '[]'::json)"
        return f"(SELECT {aggregate} FROM {table} WHERE {condition})"


class _Mysql(_Dialect):
    object_function = "JSON_OBJECT"

    # "%" doubled: the driver formats every statement that has parameters
    def timestamp(self, sql: str) -> str:
        micro = f"IF(MICROSECOND({sql}) = 0, '', DATE_FORMAT({sql}, '.%%f'))"
        return f"CONCAT(DATE_FORMAT({sql}, '%%Y-%%m-%%dT%%H:%%i:%%s'), {micro}, 'Z')"

    def boolean(self, sql: str) -> str:
        test = f"CASE WHEN ({sql}) THEN 'true' WHEN NOT ({sql}) THEN 'false' END"
        return f"JSON_EXTRACT({test}, '$')"

    def json(self, sql: str) -> str:
        return f"JSON_EXTRACT(NULLIF({sql}, ''), '$')"

    # JSON_ARRAYAGG's text is bounded by group_concat_max_len (raised per connection)
    def aggregate(self, expr: str, order: str) -> str:
        return f"COALESCE(JSON_ARRAYAGG({expr} ORDER BY {order}), '[]')"

    def nested(self, expr: str, table: str, condition: str, order: str, index: str) -> str:
        aggregate = self.aggregate(expr, order)
        return f"JSON_EXTRACT((SELECT {aggregate} FROM {table} WHERE {condition}), '$')"


def dialect() -> _Dialect:
    """The JSON functions of the bound database."""
    db = database.obj
    if isinstance(db, PostgresqlDatabase):
        return _POSTGRESQL
    if isinstance(db, MySQLDatabase):
        return _MYSQL
    return _SQLITE


_SQLITE, _POSTGRESQL, _MYSQL = _Sqlite(), _Postgresql(), _Mysql()


def nested(
    model: type[Model],
    document: Document,
    link: tuple[str, str],
    order: Sequence[str],
    *,
    index: str = "",
) -> Value:
    """The rows of ``model`` whose field ``link[0]`` equals the enclosing row's column
    ``link[1]`` (qualified SQL), as a JSON array of ``document`` in the order of the SQL
    expressions ``order`` — on SQLite, the order of ``model``'s index ``index`` when given
    (its columns: ``link[0]``, then ``order``), read through it instead of sorted."""
    d = dialect()
    table, condition = quote(model._meta.table_name), f"{column(model, link[0])} = {link[1]}"
    expr = d.object(document)
    return Value(d.nested(expr, table, condition, ", ".join(order), index), DOCUMENT)


def page(
    model: type[Model],
    document: Document,
    where: Where,
    *,
    order: Sequence[str],
    descending: bool = False,
    limit: int,
    offset: int = 0,
    after: Sequence[Any] | None = None,
) -> Page:
    """A page of ``model``'s rows matching ``where``, rendered as ``document``, in the order
    of the columns ``order`` (all ascending, or all ``descending``; the last one unique, e.g.
    ``id``): :attr:`Page.items` is the JSON array's text (:class:`JsonText`).

    ``after`` (the key of the previous page's last item, :attr:`Page.after`) starts the page
    right behind that item through the ordering index — keyset paging, which never reads the
    rows before it, however deep the page — and ``offset`` skips rows after that. One
    statement reads the page, tells whether a row follows it (reading ``offset + limit + 1``
    rows at most) and counts the matching rows up to :data:`COUNT_CAP` + 1.
    """
    rows_where = Where()
    rows_where.parts, rows_where.params = list(where.parts), list(where.params)
    if after is not None:
        keyset(rows_where, model, order, after, descending=descending)
    sql = _statement(
        dialect(),
        model,
        tuple(document),
        tuple(order),
        descending,
        rows_where.sql(),
        where.sql(),
        int(limit),
        int(offset),
        COUNT_CAP,
    )
    rows, counted = rows_where.params, where.params
    params = [*rows, *rows, *counted, *counted, *rows]  # in the order of the text
    items, key, more, count = execute(sql, params).fetchone()
    last = orjson.loads(key) if more and key else None
    return Page.counted(
        JsonText(items),
        int(count),
        more=bool(more),
        after=tuple(last[str(i)] for i in range(len(order))) if last else None,
    )


@lru_cache(maxsize=512)
def _statement(
    d: _Dialect,
    model: type[Model],
    document: Document,
    order: tuple[str, ...],
    descending: bool,
    rows_sql: str,
    where_sql: str,
    limit: int,
    offset: int,
    cap: int,
) -> str:
    """The statement of :func:`page` (the same text for the same page shape, which the
    drivers' statement caches then find again)."""
    table = quote(model._meta.table_name)
    direction = " DESC" if descending else ""
    key = fields(model, [(str(i), model._meta.columns[c].name) for i, c in enumerate(order)])
    by = ", ".join(v.sql + direction for _, v in key)
    positions = ", ".join(f"{v.sql} AS o{i}" for i, (_, v) in enumerate(key))
    inner = (
        f"SELECT {d.object(document)} AS item, {positions} "
        f"FROM {table}{rows_sql} ORDER BY {by} LIMIT {limit} OFFSET {offset}"
    )
    # the key of the page's last item (the cursor to the next page), and whether a row follows
    # it: both read through the ordering index alone
    at = f"FROM {table}{rows_sql} ORDER BY {by} LIMIT 1 OFFSET"
    # (with limit 0 the same subquery answers null: the statement takes the same parameters)
    last_key = d.object(key) if limit else "NULL"
    last = d.text(f"SELECT {last_key} AS k {at} {max(offset + limit - 1, 0)}")
    follows = f"SELECT 1 AS one {at} {offset + limit}"
    counted = capped_count(table, where_sql, cap)
    # the aggregate orders by the page's own columns (SQLite's keeps the subquery's order)
    again = ", ".join(f"o{i}{direction}" for i in range(len(order)))
    return (
        f"SELECT {d.aggregate('item', again)}, {last}, (SELECT COUNT(*) FROM ({follows}) follows), "
        f"{counted} FROM ({inner}) page"
    )
