"""``oma failover VM --test`` and ``oma test-end VM`` against a real ``oma serve`` (gunicorn) on
a free loopback port; the worker's part is played by the test through the database."""

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

from labtest.procs import ManagedProcess, free_port, wait_until
from oma.cli._errors import ExitCode

pytestmark = pytest.mark.slow

VM = {"id": "4202-cli", "name": "cli-vm", "disks": [{"key": "2000", "capacity_bytes": 4 << 20}]}


def _oma(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oma", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real `oma serve` with an admin token and ``cli-vm`` added; stopped by PID."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}
    env.update(
        OMA_DATA_DIR=str(tmp_path / "data"),
        OMA_SECRET_KEY=Fernet.generate_key().decode(),
        OMA_LOG_LEVEL="WARNING",
        OMA_BIND=f"127.0.0.1:{port}",
        OMA_API_WORKERS="1",
    )
    token = _oma(env, "token", "create", "--name", "admin", "--role", "admin").stdout.split()[-1]
    proc = ManagedProcess(
        [sys.executable, "-m", "oma", "serve"],
        env=env,
        name="oma-serve",
        log_path=tmp_path / "s.log",
    ).start()
    try:
        proc.wait_port(port)
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        vma = requests.post(
            f"{url}/api/v1/vma-appliances",
            headers=headers,
            json={"name": "v", "url": "http://127.0.0.1:9", "token": "tok1"},
            timeout=30,
        ).json()
        added = requests.post(
            f"{url}/api/v1/discovery/add",
            headers=headers,
            json={"vma_id": vma["id"], "vcenter": "vc", "vms": [VM]},
            timeout=30,
        ).json()["added"][0]
        yield {
            "env": {**env, "OMA_URL": url, "OMA_TOKEN": token},
            "db": f"sqlite:///{tmp_path / 'data' / 'oma.db'}",
            "context_id": added["id"],
        }
    finally:
        proc.stop()


def _db(served: dict[str, Any]) -> Any:
    from oma.database import database, init_db

    init_db(served["db"])
    return database.connection_context()


def _set_test(served: dict[str, Any], test_id: str, status: str, **result: Any) -> None:
    from oma.database.models import Workflow

    with _db(served):
        Workflow.update(status=status, result=result or None).where(
            Workflow.id == test_id
        ).execute()


def test_test_failover_and_test_end_commands(served: dict[str, Any]) -> None:
    from oma.database.models import VmContext, Workflow
    from oma.database.repos import contexts

    env, ctx = served["env"], served["context_id"]
    with _db(served):
        contexts.set_state(ctx, "ready_for_failover", ready_for_failover=True)

    for args, needle in (
        (("--test", "--offering", "so-1"), "--network SRC=ID or --test-network ID"),
        (("--test", "--test-network", "iso", "--end-test", "--offering", "so-1"), "--end-test"),
        (("--test-network", "iso", "--offering", "so-1"), "only for a test failover"),
    ):
        bad = _oma(env, "failover", "cli-vm", *args)
        assert bad.returncode == ExitCode.USAGE and needle in bad.stderr, bad.stderr

    started = _oma(
        env, "failover", "cli-vm", "--test", "--test-network", "iso", "--offering", "so-1",
        "--auto-end", "30m",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    test_id = started.stdout.strip().splitlines()[-1]
    assert f"test failover {test_id} requested for cli-vm (pending)" in started.stdout
    with _db(served):
        params = Workflow.get_by_id(test_id).params
    assert params["type"] == "test" and params["auto_end_after"] == 1800
    assert params["network_mappings"] == {"(none)": "iso"}  # the VM has no NICs
    assert params["keep_macs"] is False

    # the worker ran it: the test is in place; a live failover without --end-test is refused
    _set_test(served, test_id, "done", test_vm_name="cli-vm-test", test_vm_id="vm-t")
    with _db(served):
        contexts.set_state(ctx, "failed_over_test")
    live = _oma(env, "failover", "cli-vm", "--network", "VM Network=n1", "--offering", "so-1")
    assert live.returncode == ExitCode.CONFLICT
    assert "has a test failover in place" in live.stderr
    assert "hint: end the test first: `oma test-end VM`, or add --end-test" in live.stderr

    ended = _oma(env, "test-end", "cli-vm")
    assert ended.returncode == 0, ended.stderr
    assert f"ending test failover {test_id} of cli-vm (ending)" in ended.stdout
    assert ended.stdout.strip().splitlines()[-1] == test_id
    again = _oma(env, "test-end", "cli-vm")
    assert again.returncode == ExitCode.CONFLICT and "active test failover end" in again.stderr

    # the worker finishes the end; --watch on a finished end reports it
    with _db(served):
        end = Workflow.get(Workflow.kind == "failover_test_end")
        Workflow.update(status="done").where(Workflow.id == end.id).execute()
        VmContext.update(state="ready_for_failover").where(VmContext.id == ctx).execute()
    _set_test(served, test_id, "ended")
    nothing = _oma(env, "test-end", "cli-vm", "--watch")
    assert nothing.returncode == ExitCode.CONFLICT
    assert "no test failover in place" in nothing.stderr

    with _db(served):
        contexts.set_state(ctx, "failed_over_test")
        Workflow.update(status="failed", error="delete_volumes: boom").where(
            Workflow.id == end.id
        ).execute()
    resumed = _oma(env, "test-end", "cli-vm")  # a failed end is resumed
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == test_id
    with _db(served):
        assert Workflow.get_by_id(end.id).status == "pending"
        assert Workflow.select().where(Workflow.kind == "failover_test_end").count() == 1


def test_watch_follows_the_end_until_the_test_has_ended(served: dict[str, Any]) -> None:
    from oma.database.models import Workflow
    from oma.database.repos import contexts

    env, ctx = served["env"], served["context_id"]
    with _db(served):
        contexts.set_state(ctx, "ready_for_failover", ready_for_failover=True)
    test_id = _oma(
        env, "failover", "cli-vm", "--test", "--test-network", "iso", "--offering", "so-1"
    ).stdout.split()[-1]
    _set_test(served, test_id, "done", test_vm_name="cli-vm-test")
    with _db(served):
        contexts.set_state(ctx, "failed_over_test")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oma", "test-end", "cli-vm", "--watch", "--interval", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        with _db(served):
            wait_until(
                lambda: Workflow.select().where(Workflow.kind == "failover_test_end").exists(),
                what="the end workflow",
            )
            end = Workflow.get(Workflow.kind == "failover_test_end")
            from oma.database.models import WorkflowStep

            WorkflowStep.update(status="done").where(WorkflowStep.workflow == end.id).execute()
            Workflow.update(status="done").where(Workflow.id == end.id).execute()
        _set_test(served, test_id, "ended")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert "step 4 finish: done" in lines
    assert lines[-1] == (f"test failover {test_id} ended: its VM, volumes and snapshots are gone")
