"""The API's connection pools on PostgreSQL and MariaDB: no round trip to hand out or take
back a connection used a moment ago, and still no dead connection or open transaction
handed to the next request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from oma.database import db as dbmod


@pytest.fixture(params=["postgresql", "mariadb"])
def pool(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """(kind, a pooled peewee Database) on a throwaway database of each server."""
    url = request.getfixturevalue(
        "postgres_url" if request.param == "postgresql" else "mariadb_url"
    )
    database = dbmod.connect_database(url, pooled=True)
    yield request.param, database
    database.close_all()


def _one(database: Any, sql: str) -> Any:
    return database.execute_sql(sql).fetchone()[0]


def _session_id(kind: str, database: Any) -> int:
    return _one(
        database, "SELECT pg_backend_pid()" if kind == "postgresql" else "SELECT CONNECTION_ID()"
    )


def _status(database: Any, name: str) -> str:
    """A MariaDB session status counter of the connection itself."""
    return database.execute_sql(f"SHOW SESSION STATUS LIKE '{name}'").fetchone()[1]


def _admin(kind: str, database: Any) -> Any:
    """A second, plain connection to the same database (to watch and kill sessions)."""
    admin = dbmod.connect_database(
        (
            "postgresql://postgres@127.0.0.1:5432/"
            if kind == "postgresql"
            else "mysql://root@127.0.0.1:3306/"
        )
        + database.database
    )
    admin.connect()
    return admin


def test_a_connection_used_a_moment_ago_comes_back_without_a_round_trip(
    pool: tuple[str, Any],
) -> None:
    kind, database = pool
    admin = _admin(kind, database)
    try:
        database.connect()
        raw = database.connection()
        sid = _session_id(kind, database)
        if kind == "mariadb":
            rollbacks = int(_status(database, "Com_rollback"))
        database.execute_sql("SELECT 42")
        database.close()  # back to the pool

        database.connect()
        assert database.connection() is raw  # the same connection, reused
        if kind == "postgresql":
            # the server's record of the session's last statement: ours, not a liveness probe
            last = _one(admin, f"SELECT query FROM pg_stat_activity WHERE pid = {sid}")
            assert last == "SELECT 42"
        else:
            # no ROLLBACK on the way back into the pool: no transaction was open
            now = int(_status(database, "Com_rollback"))
            assert now == rollbacks
        database.close()
    finally:
        admin.close()


@pytest.mark.parametrize("idle", ["checked", "reused at once"])
def test_a_connection_the_server_dropped_is_replaced(
    pool: tuple[str, Any], idle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, database = pool
    # "checked": it sat in the pool longer than the check interval; "reused at once": it did not
    monkeypatch.setattr(dbmod, "POOL_CHECK_AFTER_SECONDS", 0.0 if idle == "checked" else 3600.0)
    admin = _admin(kind, database)
    try:
        database.connect()
        sid = _session_id(kind, database)
        database.close()
        admin.execute_sql(
            f"SELECT pg_terminate_backend({sid})" if kind == "postgresql" else f"KILL {sid}"
        )
        database.connect()
        if idle == "reused at once":
            # handed out without a probe, its first statement fails and it is not pooled again
            with pytest.raises(Exception):  # noqa: B017 - the driver's own error class
                _session_id(kind, database)
            database.close()
            database.connect()
        assert _session_id(kind, database) != sid  # a new, working connection
        database.close()
    finally:
        admin.close()


def test_an_open_transaction_is_rolled_back_when_its_connection_returns(
    pool: tuple[str, Any],
) -> None:
    _, database = pool
    database.connect()
    database.execute_sql("CREATE TABLE pool_probe (n INTEGER)")
    try:
        database.execute_sql("BEGIN")
        database.execute_sql("INSERT INTO pool_probe VALUES (1)")
        database.close()  # back to the pool with the transaction open

        database.connect()
        assert _one(database, "SELECT COUNT(*) FROM pool_probe") == 0
        database.execute_sql("INSERT INTO pool_probe VALUES (2)")  # autocommit again
        database.close()
        database.connect()
        assert _one(database, "SELECT COUNT(*) FROM pool_probe") == 1
    finally:
        database.execute_sql("DROP TABLE pool_probe")
        database.close()
