"""Schema migrations: numbered files in ``migrations/`` applied in order by ``upgrade()``.

Each file ``NNNN_name.py`` defines ``up(migrator, db)`` (peewee's ``playhouse.migrations``
format). Applied names are recorded in the ``schema_migrations`` table, so ``upgrade()`` is
idempotent. Concurrent starters (``oma serve`` and ``oma worker`` both upgrading at start) are
serialised with an advisory lock on PostgreSQL and MariaDB; on SQLite the loser of the race
re-reads the history and finds nothing left to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peewee import Database, MySQLDatabase, PostgresqlDatabase
from playhouse.migrations import Runner

from .db import database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
HISTORY_TABLE = "schema_migrations"
_LOCK_ID = 727_274_001  # arbitrary constant shared by every OMA process


def _runner(db: Database) -> Runner:
    return Runner(db, directory=str(MIGRATIONS_DIR), table_name=HISTORY_TABLE)


@contextmanager
def _schema_lock(db: Database) -> Iterator[None]:
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    elif isinstance(db, MySQLDatabase):
        db.execute_sql("SELECT GET_LOCK(%s, 60)", (f"oma-schema-{_LOCK_ID}",))
        try:
            yield
        finally:
            db.execute_sql("SELECT RELEASE_LOCK(%s)", (f"oma-schema-{_LOCK_ID}",))
    else:
        yield


def pending() -> list[str]:
    """Names of migrations not yet applied to the bound database."""
    db = database.obj
    with database.connection_context():
        return [m.name for m in _runner(db).status() if not m.applied and m.path]


def applied() -> list[str]:
    """Names of migrations applied to the bound database, in order."""
    db = database.obj
    with database.connection_context():
        return [m.name for m in _runner(db).status() if m.applied]


def upgrade() -> list[str]:
    """Apply every pending migration to the bound database; return the names applied."""
    db = database.obj
    with database.connection_context(), _schema_lock(db):
        runner = _runner(db)
        try:
            return runner.up()
        except Exception:
            # Another process may have applied the same migration a moment earlier (SQLite
            # has no advisory lock): if nothing is pending now, the schema is current.
            if db.in_transaction():
                db.rollback()
            if any(not m.applied and m.path for m in _runner(db).status()):
                raise
            return []
