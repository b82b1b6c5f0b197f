"""The API at scale: revocation without delay, bounded pages, list indexes on every database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet

from labtest.procs import ManagedProcess, free_port

INDEXES = {
    "replication_jobs": [
        ["created_at", "id"],
        ["context_id", "created_at", "id"],
        ["vma_id", "created_at", "id"],
        ["status", "created_at", "id"],
    ],
    "vm_contexts": [["name", "id"], ["state", "name", "id"], ["vma_id", "name", "id"]],
    "job_events": [["job_id", "at", "id"], ["context_id", "at", "id"]],
    "workflows": [["created_at", "id"]],
    "schedule_runs": [["started_at", "id"], ["schedule_id", "started_at", "id"]],
}


def _oma(env: dict[str, str], *args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "oma", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real `oma serve` (2 gunicorn workers x 4 threads, pooled connections) on SQLite."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}
    env.update(
        OMA_DATA_DIR=str(tmp_path / "data"),
        OMA_SECRET_KEY=Fernet.generate_key().decode(),
        OMA_LOG_LEVEL="WARNING",
        OMA_BIND=f"127.0.0.1:{port}",
        OMA_API_WORKERS="2",
    )
    _oma(env, "db", "upgrade")
    token = _oma(env, "token", "create", "--name", "ops", "--role", "viewer").split()[-1]
    proc = ManagedProcess(
        [sys.executable, "-m", "oma", "serve"], env=env, log_path=tmp_path / "serve.log"
    ).start()
    try:
        proc.wait_port(port)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "env": env}
    finally:
        proc.stop()


def test_a_revoked_token_is_refused_by_every_worker_at_the_next_request(
    served: dict[str, Any],
) -> None:
    url, headers = served["url"], {"Authorization": f"Bearer {served['token']}"}
    with requests.Session() as http:
        # several connections: the requests reach both gunicorn workers and their pools
        for _ in range(8):
            assert http.get(f"{url}/api/v1/vm-contexts", headers=headers).status_code == 200
        _oma(served["env"], "token", "revoke", "--name", "ops")
        for _ in range(8):
            r = requests.get(f"{url}/api/v1/replications", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"] == {
                "code": "unauthorized",
                "message": "invalid or revoked token",
                "field": None,
            }


@pytest.mark.parametrize(
    "path",
    ["/api/v1/replications", "/api/v1/vm-contexts", "/api/v1/workflows", "/api/v1/schedules/runs"],
)
def test_every_list_refuses_a_limit_above_its_maximum(client: Any, auth: Any, path: str) -> None:
    from oma.api.validation import MAX_LIMIT

    assert client.get(f"{path}?limit={MAX_LIMIT}", headers=auth.viewer).status_code == 200
    r = client.get(f"{path}?limit={MAX_LIMIT + 1}", headers=auth.viewer)
    assert r.status_code == 400
    assert r.json["error"]["field"] == "limit"
    assert r.json["error"]["message"] == f"limit: must be between 1 and {MAX_LIMIT}"


def test_the_list_indexes_exist_after_migration(any_db: str) -> None:
    from oma.database import database

    for table, wanted in INDEXES.items():
        found = [index.columns for index in database.obj.get_indexes(table)]
        for columns in wanted:
            assert columns in found, f"{table}: no index on {columns} (have {found})"


def test_the_lists_read_through_their_indexes_on_postgresql(postgres_url: str) -> None:
    """With sequential scans priced out, the planner still answers each list and filter from
    one index in the list's order: no sort step, no whole-table read. (A database of its
    own: the statistics of other tests' few rows would make a sort of one row the cheaper
    plan.)"""
    from labtest.oma import throwaway_database
    from oma.api.validation import MAX_LIMIT
    from oma.database import database, init_db, upgrade

    with throwaway_database("postgresql") as url:
        init_db(url)
        upgrade()
        _assert_index_plans(database, MAX_LIMIT)
        database.obj.close()


def _assert_index_plans(database: Any, limit: int) -> None:
    queries = {
        "replication_jobs_created_at_id": "FROM replication_jobs ORDER BY created_at DESC, id DESC",
        "replication_jobs_context_id_created_at_id": "FROM replication_jobs WHERE context_id = "
        "'x' ORDER BY created_at DESC, id DESC",
        "replication_jobs_status_created_at_id": "FROM replication_jobs WHERE status = "
        "'failed' ORDER BY created_at DESC, id DESC",
        "vm_contexts_name_id": "FROM vm_contexts ORDER BY name, id",
        "vm_contexts_state_name_id": "FROM vm_contexts WHERE state = 'failed' ORDER BY name, id",
        "job_events_context_id_at_id": "FROM job_events WHERE context_id = 'x' "
        "ORDER BY at DESC, id DESC",
    }
    with database.connection_context(), database.atomic():
        database.execute_sql("SET LOCAL enable_seqscan = off")
        for index, query in queries.items():
            plan = "\n".join(
                r[0]
                for r in database.execute_sql(f"EXPLAIN SELECT * {query} LIMIT {limit}").fetchall()
            )
            assert f"using {index}" in plan.lower(), plan
            assert "Sort" not in plan, plan


def test_the_lists_read_through_their_indexes_on_sqlite(db: str) -> None:
    from oma.database import database

    queries = {
        "replication_jobs_created_at_id": "FROM replication_jobs ORDER BY created_at DESC, id DESC",
        "replication_jobs_vma_id_created_at_id": "FROM replication_jobs WHERE vma_id = 'x' "
        "ORDER BY created_at DESC, id DESC",
        "vm_contexts_name_id": "FROM vm_contexts ORDER BY name, id",
        "vm_contexts_vma_id_name_id": "FROM vm_contexts WHERE vma_id = 'x' ORDER BY name, id",
    }
    for index, query in queries.items():
        plan = " ".join(
            r[-1] for r in database.execute_sql(f"EXPLAIN QUERY PLAN SELECT * {query} LIMIT 50")
        )
        assert f"INDEX {index}" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


@pytest.mark.parametrize("first", ["oma", "sqlite3"])
def test_sqlite_memory_statistics_are_off_once_oma_is_imported_first(first: str) -> None:
    """The threads of an API process would contend on SQLite's global allocation statistics
    mutex; importing ``oma`` turns the statistics off, which only works before ``sqlite3``
    is imported (otherwise nothing changes and nothing breaks)."""
    script = (
        f"import {first}, oma, sqlite3, ctypes\n"
        "from oma.sqlite_setup import disable_memory_statistics\n"
        "con = sqlite3.connect(':memory:')\n"
        "con.execute('CREATE TABLE t (x)')\n"
        "print(ctypes.CDLL('libsqlite3.so.0').sqlite3_memory_used(), "
        "disable_memory_statistics())\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    used, again = res.stdout.split()
    assert again == "False"  # too late once SQLite is initialized
    if first == "oma":
        assert used == "0"
    else:
        assert int(used) > 0
