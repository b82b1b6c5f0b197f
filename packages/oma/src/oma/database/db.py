"""The database handle: a peewee ``DatabaseProxy`` initialised from a URL.

``init_db(url)`` binds :data:`database` to SQLite (WAL, foreign keys, busy timeout,
``BEGIN IMMEDIATE`` transactions),
PostgreSQL (``postgresql://``) or MariaDB/MySQL (``mysql://``). Connections are not opened
automatically (``autoconnect=False``): the API opens one per request, the worker one per job
run, and code outside both uses ``with database.connection_context():`` (re-entrant).
Every multi-row state change runs in ``database.atomic()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from peewee import Database, DatabaseProxy, Model
from playhouse import db_url

database = DatabaseProxy()
"""The process-wide database; bound by :func:`init_db`."""

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10000,
    "synchronous": "normal",
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


def connect_database(url: str) -> Database:
    """A new (closed) peewee Database for ``url`` with the OMA's connection options."""
    kind = dialect(url)
    kwargs: dict[str, Any] = {"autoconnect": False}
    if kind == "sqlite":
        path = urlsplit(url).path
        if path and path != "/:memory:":
            # sqlite:////abs/path → /abs/path; create the directory on first use.
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["pragmas"] = SQLITE_PRAGMAS
        kwargs["timeout"] = 10
        # Transactions take the write lock up front: a deferred one that reads, then writes,
        # fails at once with "database is locked" when another writer got in between.
        kwargs["lock_type"] = "IMMEDIATE"
        kwargs["field_types"] = {"UTCDATETIME": "DATETIME"}
    elif kind == "mysql":
        url = "mysql://" + url.split("://", 1)[1]
        kwargs["charset"] = "utf8mb4"
        kwargs["field_types"] = {"UTCDATETIME": "DATETIME(6)"}
    else:
        url = "postgresql://" + url.split("://", 1)[1]
        kwargs["field_types"] = {"UTCDATETIME": "TIMESTAMP"}
    return db_url.connect(url, **kwargs)


def init_db(url: str) -> Database:
    """Bind :data:`database` to ``url`` and return the underlying peewee Database."""
    db = connect_database(url)
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
