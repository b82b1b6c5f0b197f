"""The database handle: a peewee ``DatabaseProxy`` initialised from a URL.

``init_db(url)`` binds :data:`database` to SQLite (WAL, foreign keys, busy timeout,
``BEGIN IMMEDIATE`` transactions),
PostgreSQL (``postgresql://``, driver from the ``oma[postgresql]`` extra) or MariaDB/MySQL
(``mysql://``, driver from ``oma[mariadb]``); a SQLite file is created 0600 (its directory 0700
when this creates it). Connections are not opened
automatically (``autoconnect=False``): the API takes one per request from a per-process pool
(``init_db(url, pooled=True)``: a connection is opened once per thread and reused, a broken one
is replaced on its next checkout), the worker opens one per job run, and code outside both uses
``with database.connection_context():`` (re-entrant).
Every multi-row state change runs in ``database.atomic()``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from peewee import Database, DatabaseProxy, Model
from playhouse import db_url
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase

from migration_common import ConfigError

database = DatabaseProxy()
"""The process-wide database; bound by :func:`init_db`."""

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10000,
    "synchronous": "normal",
}

# The driver modules peewee can use per dialect, and the oma extra that installs one.
DRIVERS = {
    "postgresql": (("psycopg2", "psycopg"), "postgresql", "PostgreSQL"),
    "mysql": (("pymysql", "MySQLdb"), "mariadb", "MariaDB/MySQL"),
}


class BaseModel(Model):
    """Base of every OMA model; bound to :data:`database`, snake_case table names."""

    class Meta:
        database = database
        legacy_table_names = False


def dialect(url: str) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` for a database URL."""
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme in ("postgres", "postgresql"):
        return "postgresql"
    if scheme in ("mysql", "mariadb"):
        return "mysql"
    if scheme == "sqlite":
        return "sqlite"
    raise ValueError(f"unsupported database URL scheme {scheme!r}")


def require_driver(kind: str) -> None:
    """Raise ConfigError naming the extra to install when ``kind``'s driver is missing."""
    if kind not in DRIVERS:
        return
    modules, extra, label = DRIVERS[kind]
    for module in modules:
        try:
            importlib.import_module(module)
            return
        except ImportError:
            continue
    raise ConfigError(
        "OMA_DATABASE_URL",
        f"the {label} driver is not installed: install the OMA with "
        f"`pip install 'oma[{extra}]'` (or use a sqlite:/// URL)",
    )


def create_private_file(path: Path) -> None:
    """Create ``path`` 0600 (and its directory 0700 when missing) unless it exists.

    SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


POOL_STALE_SECONDS = 300
"""A pooled connection idle this long is closed instead of reused."""

POOL_CHECK_AFTER_SECONDS = 1.0
"""A pooled connection back in the pool for longer than this is checked with a round trip to
the server before it is reused (a server restart while it sat idle); one reused sooner is not."""


class _ReusedWithoutRoundTrips:
    """playhouse's PostgreSQL and MariaDB pools, without two round trips per request.

    playhouse checks every connection it hands out with a round trip (PostgreSQL
    ``SELECT 1``, MySQL ``ping``), made while it holds the pool's lock, and rolls back every
    MySQL connection it takes back, since pymysql cannot tell it whether a transaction is
    open. Under load that was a third of an API request's statements. Here a connection
    returned less than :data:`POOL_CHECK_AFTER_SECONDS` ago is handed out after a check of
    the driver's own state (a connection the server dropped shows as closed there once a
    statement failed on it), and a MySQL connection is rolled back only when the server's
    last answer said a transaction is open.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._returned_at: dict[Any, float] = {}

    def _is_closed(self, conn: Any) -> bool:
        returned = self._returned_at.pop(self.conn_key(conn), None)
        if returned is not None and time.monotonic() - returned < POOL_CHECK_AFTER_SECONDS:
            return self._closed_locally(conn)
        return super()._is_closed(conn)  # type: ignore[misc]

    def _can_reuse(self, conn: Any) -> bool:
        if not self._reusable(conn):
            return False
        self._returned_at[self.conn_key(conn)] = time.monotonic()
        return True

    def _closed_locally(self, conn: Any) -> bool:
        raise NotImplementedError

    def _reusable(self, conn: Any) -> bool:
        return super()._can_reuse(conn)  # type: ignore[misc]


class PostgresqlPool(_ReusedWithoutRoundTrips, PooledPostgresqlDatabase):
    """The API's PostgreSQL pool (see :class:`_ReusedWithoutRoundTrips`)."""

    def _closed_locally(self, conn: Any) -> bool:
        return bool(conn.closed) or self._adapter.txn_status(conn) == self._adapter.txn_unknown


_MYSQL_IN_TRANSACTION = 1  # SERVER_STATUS_IN_TRANS in the server status of every OK packet


class MysqlPool(_ReusedWithoutRoundTrips, PooledMySQLDatabase):
    """The API's MariaDB/MySQL pool (see :class:`_ReusedWithoutRoundTrips`)."""

    def _closed_locally(self, conn: Any) -> bool:
        return not conn.open  # pymysql and MySQLdb both keep it

    def _reusable(self, conn: Any) -> bool:
        status = getattr(conn, "server_status", None)  # pymysql's; other drivers: as before
        if status is None:
            return super()._reusable(conn)
        if self._closed_locally(conn):
            return False
        if status & _MYSQL_IN_TRANSACTION:
            try:
                conn.rollback()
            except Exception:
                return False
        return True


db_url.register_database(PostgresqlPool, "oma+postgresql+pool")
db_url.register_database(MysqlPool, "oma+mysql+pool")


def connect_database(url: str, *, pooled: bool = False) -> Database:
    """A new (closed) peewee Database for ``url`` with the OMA's connection options; with
    ``pooled`` closing a connection returns it to a pool (playhouse.pool) instead."""
    kind = dialect(url)
    require_driver(kind)
    kwargs: dict[str, Any] = {"autoconnect": False}
    if pooled:
        # one connection per thread at most: the API's threads bound the pool
        kwargs.update(max_connections=None, stale_timeout=POOL_STALE_SECONDS)
    if kind == "sqlite":
        path = urlsplit(url).path
        if path and path != "/:memory:":
            # sqlite:////abs/path → /abs/path; created 0600 before SQLite opens it.
            create_private_file(Path(path))
        kwargs["pragmas"] = SQLITE_PRAGMAS
        kwargs["timeout"] = 10
        # Transactions take the write lock up front: a deferred one that reads, then writes,
        # fails at once with "database is locked" when another writer got in between.
        kwargs["lock_type"] = "IMMEDIATE"
        kwargs["field_types"] = {"UTCDATETIME": "DATETIME"}
        if pooled:
            url = "sqlite+pool://" + url.split("://", 1)[1]
            # the pool hands a connection to one thread at a time, not always the same one
            kwargs["check_same_thread"] = False
    elif kind == "mysql":
        url = ("oma+mysql+pool://" if pooled else "mysql://") + url.split("://", 1)[1]
        kwargs["charset"] = "utf8mb4"
        kwargs["field_types"] = {"UTCDATETIME": "DATETIME(6)"}
        # a page of a list is one JSON_ARRAYAGG, whose text is cut at group_concat_max_len
        # (1 MiB by default) — a page of 500 items with large specs may need more
        kwargs["init_command"] = "SET SESSION group_concat_max_len = 67108864"
    else:
        url = ("oma+postgresql+pool://" if pooled else "postgresql://") + url.split("://", 1)[1]
        kwargs["field_types"] = {"UTCDATETIME": "TIMESTAMP"}
    return db_url.connect(url, **kwargs)


def init_db(url: str, *, pooled: bool = False) -> Database:
    """Bind :data:`database` to ``url`` (a connection pool with ``pooled``) and return the
    underlying peewee Database."""
    db = connect_database(url, pooled=pooled)
    database.initialize(db)
    return db


def is_sqlite() -> bool:
    """True when the bound database is SQLite (no ``FOR UPDATE SKIP LOCKED``)."""
    from peewee import SqliteDatabase

    return isinstance(database.obj, SqliteDatabase)


def write_transaction() -> Any:
    """A transaction for read-then-write work: ``BEGIN IMMEDIATE`` on SQLite.

    A deferred SQLite transaction that reads and then writes fails at once with "database is
    locked" when another connection wrote in between (busy_timeout does not apply to that
    upgrade); taking the write lock up front makes it wait instead. Nested calls are
    savepoints.
    """
    if is_sqlite() and not database.in_transaction():
        return database.atomic("IMMEDIATE")
    return database.atomic()
