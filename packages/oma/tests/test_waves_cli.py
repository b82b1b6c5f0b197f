"""``oma groups`` and ``oma schedules`` against a real ``oma serve`` (gunicorn) process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from labtest.procs import ManagedProcess, free_port, wait_until
from oma.cli._errors import ExitCode

pytestmark = pytest.mark.slow


def oma(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oma", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real ``oma serve`` with an operator token and three discovered VMs; stopped by PID."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}
    env.update(
        OMA_DATA_DIR=str(tmp_path / "data"),
        OMA_SECRET_KEY=Fernet.generate_key().decode(),
        OMA_LOG_LEVEL="WARNING",
        OMA_BIND=f"127.0.0.1:{port}",
        OMA_API_WORKERS="1",
    )
    token = oma(env, "token", "create", "--name", "op", "--role", "admin").stdout.split()[-1]
    proc = ManagedProcess(
        [sys.executable, "-m", "oma", "serve"], env=env, name="oma-serve", log_path=tmp_path / "log"
    ).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), what="oma serve health", proc=proc.proc)
        headers = {"Authorization": f"Bearer {token}"}
        vma = requests.post(
            f"{url}/api/v1/vma-appliances",
            headers=headers,
            json={"name": "v", "url": "http://127.0.0.1:9", "token": "tok1"},
        ).json()
        vms = [
            {
                "id": f"42-cli-{i}",
                "name": f"app-{i}",
                "disks": [{"key": "2000", "capacity_bytes": 1}],
            }
            for i in range(3)
        ]
        r = requests.post(
            f"{url}/api/v1/discovery/add",
            headers=headers,
            json={"vma_id": vma["id"], "vcenter": "vc", "vms": vms},
        )
        assert r.status_code == 201, r.text
        yield {**env, "OMA_URL": url, "OMA_TOKEN": token}
    finally:
        proc.stop()


def test_groups_and_schedules_commands(served: dict[str, str]) -> None:
    env = served
    made = oma(env, "groups", "add", "wave-1", "--max-concurrent", "2", "--vm", "app-0")
    assert made.returncode == 0, made.stderr
    assert "max concurrent 2" in made.stdout and "app-0" in made.stdout
    assert oma(env, "groups", "add-vms", "wave-1", "app-1").returncode == 0
    assert oma(env, "groups", "add", "wave-2").returncode == 0
    taken = oma(env, "groups", "add-vms", "wave-2", "app-0")
    assert taken.returncode == ExitCode.CONFLICT
    assert "app-0 is already in group wave-1" in taken.stderr
    listed = oma(env, "groups", "list")
    assert [line.split()[:4] for line in listed.stdout.splitlines()[1:]] == [
        ["wave-1", "0", "2", "2"],
        ["wave-2", "0", "-", "0"],
    ]

    bad = oma(env, "schedules", "add", "nightly", "--cron", "0 2 * *", "--group", "wave-1")
    assert bad.returncode == ExitCode.REJECTED
    assert "expected 5 fields" in bad.stderr and "(field cron)" in bad.stderr
    bad = oma(
        env,
        "schedules",
        "add",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--tz",
        "Moon/Base",
        "--vm",
        "app-2",
    )
    assert bad.returncode == ExitCode.REJECTED and "(field timezone)" in bad.stderr
    added = oma(
        env, "schedules", "add", "nightly", "--cron", "0 2 * * 1-5", "--tz", "Europe/Paris",
        "--group", "wave-1",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "schedule nightly added" in added.stdout and "next run 20" in added.stdout
    shown = oma(env, "schedules", "list")
    assert "nightly" in shown.stdout and "group wave-1" in shown.stdout and "skip" in shown.stdout

    fired = oma(env, "schedules", "run-now", "nightly")
    assert fired.returncode == 0, fired.stderr
    assert "manual" in fired.stdout and "eligible 2  created 2  skipped 0" in fired.stdout
    again = oma(env, "schedules", "run-now", "nightly")
    assert "created 0  skipped 2" in again.stdout and "VM has an active job" in again.stdout
    runs = oma(env, "schedules", "runs", "nightly")
    assert len(runs.stdout.splitlines()) == 3 and "manual" in runs.stdout
    run_id = runs.stdout.splitlines()[1].split()[0]
    detail = oma(env, "schedules", "runs", "--run", run_id)
    assert "app-0" in detail.stdout and "app-1" in detail.stdout

    assert oma(env, "schedules", "disable", "nightly").returncode == 0
    assert oma(env, "schedules", "remove", "nightly").returncode == 0
    assert oma(env, "schedules", "list").stdout.startswith("no schedules")
    assert oma(env, "groups", "remove-vm", "wave-1", "app-1").returncode == 0
    assert oma(env, "groups", "remove", "wave-1").returncode == 0
    missing = oma(env, "groups", "show", "wave-1")
    assert missing.returncode == ExitCode.NOT_FOUND


def test_oma_worker_fires_a_due_schedule(served: dict[str, str], tmp_path: Path) -> None:
    """The real ``oma worker`` process fires what is due: here the latest occurrence of a
    schedule made active long ago (a worker that was down), once."""
    import signal
    import sqlite3

    env = served
    added = oma(env, "schedules", "add", "minutely", "--cron", "* * * * *", "--vm", "app-2")
    assert added.returncode == 0, added.stderr
    with sqlite3.connect(tmp_path / "data" / "oma.db") as db:
        db.execute("UPDATE schedules SET active_since = '2026-01-01 00:00:00'")
    worker = ManagedProcess(
        [sys.executable, "-m", "oma", "worker"],
        env={
            **env,
            "OMA_WORKER_ID": "waves-worker",
            "OMA_BY_ID_DIR": str(tmp_path / "by-id"),
            "OMA_LOG_LEVEL": "INFO",
        },
        name="oma-worker",
        log_path=tmp_path / "worker.log",
    ).start()
    try:
        wait_until(
            lambda: "schedule" in oma(env, "schedules", "runs", "minutely").stdout,
            what="the worker to fire the schedule",
            proc=worker.proc,
        )
        runs = oma(env, "schedules", "runs", "minutely").stdout.splitlines()
        assert len(runs) == 2, runs  # a header and one run: the latest missed occurrence
        run = runs[1].split()
        assert (run[1], run[3:6]) == ("schedule", ["1", "1", "0"]), runs  # 1 eligible, 1 job
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(60) == 0, worker.log_text()
        assert "schedule fired" in worker.log_text()
    finally:
        worker.stop()
