"""The ``oma`` command: server commands, error lines and exit codes, and the operator commands
against a real ``oma serve`` (gunicorn) process on a free loopback port."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from labtest.cli import CLI_VM, add_cli_vm, cli_env, health, run_oma, served_oma
from labtest.procs import ManagedProcess, wait_until
from oma.cli._errors import ExitCode

VM = CLI_VM


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_env(tmp_path, **extra)


oma = run_oma


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://127.0.0.1:9/api/v1", "http://127.0.0.1:9"),
        ("http://127.0.0.1:9/api/v1/", "http://127.0.0.1:9"),
        ("https://oma.example:8443/", "https://oma.example:8443"),
    ],
)
def test_oma_url_may_name_the_api(given: str, used: str) -> None:
    from oma.config import load_client_config

    assert load_client_config(environ={"OMA_URL": given}).url == used


def test_oma_url_without_a_scheme_is_a_config_error(tmp_path: Path) -> None:
    res = oma(_env(tmp_path, OMA_URL="127.0.0.1:8082", OMA_TOKEN="x" * 40), "jobs")
    assert res.returncode == ExitCode.CONFIG, res.stderr
    assert "OMA_URL" in res.stderr and "http://127.0.0.1:8082" in res.stderr


def test_db_upgrade_and_token_create(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = oma(env, "db", "upgrade")
    assert first.returncode == 0 and "applied 0001_initial" in first.stdout
    assert "up to date" in oma(env, "db", "upgrade").stdout
    status = oma(env, "db", "status").stdout.strip().splitlines()
    assert status[0] == "[x] 0001_initial" and all(line.startswith("[x] ") for line in status)
    made = oma(env, "token", "create", "--name", "ci", "--role", "viewer")
    assert made.returncode == 0
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("oma_") and len(token) > 40
    db_path = (tmp_path / "data" / "oma.db").resolve()
    assert made.stderr.strip().endswith(f"stored in the SQLite database {db_path}")
    db = (tmp_path / "data" / "oma.db").read_bytes()
    assert token.encode() not in db  # only the hash is stored
    listed = oma(env, "token", "list").stdout
    assert "ci" in listed and "viewer" in listed and token not in listed


@pytest.mark.parametrize(
    ("extra", "args", "code", "needle"),
    [
        ({"OMA_POLL_INTERVAL": "soon"}, ("db", "upgrade"), ExitCode.CONFIG, "OMA_POLL_INTERVAL"),
        (
            {"OMA_DATABASE_URL": "oracle://x"},
            ("db", "upgrade"),
            ExitCode.CONFIG,
            "OMA_DATABASE_URL",
        ),
        (
            {"OMA_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
            ("db", "upgrade"),
            ExitCode.DATABASE,
            "database unavailable",
        ),
        ({}, ("token", "revoke", "--name", "ghost"), ExitCode.NOT_FOUND, "ghost"),
        (
            {"OMA_AUTO_UPGRADE": "false"},
            ("token", "list"),
            ExitCode.DATABASE,
            "schema is not current",
        ),
        ({}, ("vms",), ExitCode.UNAUTHORIZED, "no API token"),
        (
            {"OMA_TOKEN": "x", "OMA_URL": "http://127.0.0.1:1"},
            ("jobs",),
            ExitCode.UNREACHABLE,
            "cannot reach",
        ),
    ],
)
def test_errors_are_one_line_with_a_named_exit_code(
    tmp_path: Path, extra: dict[str, str], args: tuple[str, ...], code: int, needle: str
) -> None:
    res = oma(_env(tmp_path, **extra), *args)
    assert res.returncode == code, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert len(lines) <= 2 and all(not ln.startswith("Traceback") for ln in lines)
    if len(lines) == 2:
        assert lines[1].startswith("hint: ")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real `oma serve` (gunicorn) with an admin token; stopped by PID afterwards."""
    with served_oma(tmp_path) as info:
        yield info


@pytest.mark.slow
def test_real_server_auth_and_operator_commands(served: dict[str, Any]) -> None:
    url, headers = served["url"], {"Authorization": f"Bearer {served['token']}"}
    with requests.Session() as http:
        assert http.get(f"{url}/health").json()["database"]["ok"] is True
        r = http.get(f"{url}/api/v1/vm-contexts")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = http.get(f"{url}/api/v1/vm-contexts", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        vma = http.post(
            f"{url}/api/v1/vma-appliances",
            headers=headers,
            json={"name": "v", "url": "http://127.0.0.1:9", "token": "tok1"},
        ).json()
        r = http.post(
            f"{url}/api/v1/discovery/add",
            headers=headers,
            json={"vma_id": vma["id"], "vcenter": "vc", "vms": [VM]},
        )
        assert r.status_code == 201
        assert http.get(f"{url}/api/v1/openapi.json", headers=headers).json()["paths"]
    env = served["env"]
    listed = oma(env, "vms")
    assert listed.returncode == 0 and "cli-vm" in listed.stdout and "discovered" in listed.stdout
    started = oma(env, "replicate", "cli-vm", "--type", "full")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip().splitlines()[-1]
    again = oma(env, "replicate", VM["id"])
    assert again.returncode == ExitCode.CONFLICT and "active job" in again.stderr
    jobs = oma(env, "jobs", "--active")
    assert job_id[:8] in jobs.stdout and "pending" in jobs.stdout
    shown = oma(env, "job", job_id)
    assert f"job={job_id} status=pending" in shown.stdout
    missing = oma(env, "job", "nope")
    assert missing.returncode == ExitCode.NOT_FOUND


class _Watcher:
    """``oma job ID --watch`` (or ``oma *args``) as a subprocess whose stdout lines are
    collected by a thread."""

    def __init__(
        self,
        env: dict[str, str],
        job_id: str,
        *args: str,
        sigint: Any = signal.SIG_DFL,
    ) -> None:
        self.lines: list[str] = []
        argv = args or ("job", job_id, "--watch", "--interval", "0.1")
        # The command starts with the SIGINT disposition ``sigint`` (inherited through exec),
        # not with whatever the test runner got from how it was started (a background job
        # of a non-interactive shell ignores SIGINT). Set here, not in a preexec_fn (unsafe
        # with threads); a Python handler becomes the default in the child.
        previous = signal.signal(signal.SIGINT, sigint)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oma", *argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            )
        finally:
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self._err.append(self.proc.stderr.read())

    def wait_for(self, needle: str) -> None:
        wait_until(
            lambda: any(needle in ln for ln in self.lines),
            what=f"watch line {needle}",
            proc=self.proc,
        )

    def finish(self) -> tuple[int, str]:
        """Wait (30 s at most: TimeoutExpired) for the exit; the exit code and stderr."""
        code = self.proc.wait(30)
        for reader in self._readers:
            reader.join(10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code, "".join(self._err)


def _queue_job(served: dict[str, Any]) -> str:
    """``cli-vm`` added and ``oma replicate cli-vm`` run; the new job's id."""
    add_cli_vm(served)
    return oma(served["env"], "replicate", "cli-vm").stdout.strip().splitlines()[-1]


def test_job_shows_why_a_pending_job_waits(served: dict[str, Any], tmp_path: Path) -> None:
    import sqlite3

    job_id = _queue_job(served)
    reason = "waiting for room on the OMA VM vm-1: 8 of 8 attachable volumes are held"
    with sqlite3.connect(tmp_path / "data" / "oma.db") as db:  # as the worker's admission does
        db.execute("UPDATE replication_jobs SET wait_reason = ? WHERE id = ?", (reason, job_id))
    shown = oma(served["env"], "job", job_id)
    assert shown.returncode == 0, shown.stderr
    assert f"waiting: {reason}" in shown.stdout
    api = requests.get(
        f"{served['url']}/api/v1/replications/{job_id}",
        headers={"Authorization": f"Bearer {served['token']}"},
    ).json()
    assert api["status"] == "pending" and api["wait_reason"] == reason


def _disk(phase: str, done: int, seq: int, **extra: Any) -> dict[str, Any]:
    """One disk of a stub VMA progress answer for ``cli-vm``'s first disk."""
    return {
        "disk_key": "2000",
        "phase": phase,
        "bytes_total": 4 << 20,
        "bytes_done": done,
        "throughput_bps": 1 << 20,
        "seq": seq,
        **extra,
    }


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_job_watch_prints_plain_lines_until_done(served: dict[str, Any], outcome: str) -> None:
    from labtest.oma import StubVma, progress_doc
    from oma.database import database, init_db
    from oma.database.models import ReplicationJob
    from oma.services.poller import ProgressPoller

    env = served["env"]
    job_id = _queue_job(served)
    watcher = _Watcher(env, job_id)
    with StubVma() as stub:
        vma_id = requests.get(
            f"{served['url']}/api/v1/replications/{job_id}",
            headers={"Authorization": f"Bearer {served['token']}"},
        ).json()["vma_id"]
        r = requests.patch(
            f"{served['url']}/api/v1/vma-appliances/{vma_id}",
            headers={"Authorization": f"Bearer {served['token']}"},
            json={"url": stub.url},
        )
        assert r.status_code == 200, r.text
        poller = ProgressPoller(token_for=lambda _v: stub.token)
        try:
            watcher.wait_for("status=pending")
            # Play the worker's part through the same database: the workflow hands the job
            # to the VMA, then the real poller writes each answer of the stub VMA.
            init_db(served["db"])
            with database.connection_context():
                ReplicationJob.update(status="replicating").where(
                    ReplicationJob.id == job_id
                ).execute()
            stub.set_progress(job_id, progress_doc(job_id, "running", [_disk("copy", 1 << 20, 1)]))
            assert poller.tick().updated == 1
            watcher.wait_for("phase=copy")
            stub.set_progress(
                job_id, progress_doc(job_id, "running", [_disk("verify", 4 << 20, 2)])
            )
            assert poller.tick().updated == 1
            watcher.wait_for("phase=verify")
            if outcome == "completed":
                done = [
                    _disk("done", 4 << 20, 3, status="completed", change_id="52 aa/1"),
                    {
                        "disk_key": "2001",
                        "phase": "done",
                        "status": "completed",
                        "bytes_total": 2 << 20,
                        "bytes_done": 2 << 20,
                        "change_id": "52 bb/1",
                        "seq": 3,
                    },
                ]
                stub.set_progress(job_id, progress_doc(job_id, "completed", done))
                assert poller.tick().completed == 1
            else:
                broken = [_disk("verify", 4 << 20, 3, status="failed", error="NBD read failed")]
                stub.set_progress(
                    job_id,
                    progress_doc(job_id, "failed", broken, error="migratekit exited with code 3"),
                )
                assert poller.tick().failed == 1
            code, err = watcher.finish()
        finally:
            poller.close()
            if watcher.proc.poll() is None:
                watcher.proc.kill()
                watcher.finish()
    lines = watcher.lines
    assert all(ln.startswith(("job=", "  disk ", "job ")) for ln in lines), lines
    if outcome == "completed":
        assert code == 0, err
        assert f"job {job_id} completed" in lines[-1]
        assert any("disk 2000: completed" in ln and "change_id=52 aa/1" in ln for ln in lines)
    else:
        assert code == ExitCode.JOB_FAILED
        assert err.startswith("error: ") and "vma_reported" in err
        assert "migratekit exited with code 3" in err


@pytest.mark.slow
@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_prints_cancelled_and_exits_130(served: dict[str, Any], inherited: str) -> None:
    """Ctrl-C during ``oma job --watch`` prints ``cancelled`` and exits 130 at once, also when
    the command was started with SIGINT ignored (as a non-interactive shell starts a
    background job, and so every process that job starts): the watch installs its own
    handler before it prints its first line."""
    env = served["env"]
    job_id = _queue_job(served)
    sigint = signal.SIG_IGN if inherited == "ignored" else signal.SIG_DFL
    # The default 1 s interval: the signal most likely lands in the sleep between polls.
    watcher = _Watcher(env, job_id, "job", job_id, "--watch", sigint=sigint)
    try:
        watcher.wait_for(f"job={job_id}")  # watching: the first progress line arrived
        sent = time.monotonic()
        watcher.proc.send_signal(signal.SIGINT)
        code, err = watcher.finish()
        took = time.monotonic() - sent
    finally:
        if watcher.proc.poll() is None:
            watcher.proc.kill()
            watcher.finish()
    assert code == ExitCode.CANCELLED, err
    assert err.strip().splitlines() == [
        f"cancelled; job {job_id} goes on (stop it with `oma stop {job_id[:8]}`)",
        f"hint: re-attach with `oma job {job_id[:8]} --watch`",
    ]
    assert took < 10, f"exited {took:.1f} s after SIGINT"
    assert all(ln.startswith(f"job={job_id}") for ln in watcher.lines), watcher.lines


def test_progress_bar_and_plain_line_format() -> None:
    from oma.cli._format import duration, progress_bar, progress_line, size

    p = {
        "job_id": "j1",
        "status": "running",
        "job_status": "replicating",
        "phase": "copy",
        "percent": 42.0,
        "bytes_done": 3 << 29,
        "bytes_total": 3 << 30,
        "throughput_bps": 85 << 20,
        "eta_seconds": 21.4,
    }
    bar = progress_bar(p, width=10)
    assert bar.startswith("[####......]  42.0%  1.5 GiB/3.0 GiB  85.0 MiB/s  ETA 0:00:21")
    assert bar.endswith("replicating/copy")
    assert progress_line(p) == (
        "job=j1 status=replicating phase=copy percent=42.0 "
        "done=1.5GiB/3.0GiB rate=85.0MiB/s eta=0:00:21"
    )
    # no rate yet: "-", not 0; a requested stop shows; no ETA while a disk has not reported
    # its size (the total would still grow)
    p.update(throughput_bps=0, stop_requested=True)
    assert progress_line(p) == (
        "job=j1 status=replicating(stop requested) phase=copy percent=42.0 "
        "done=1.5GiB/3.0GiB rate=- eta=-"
    )
    p.update(
        stop_requested=False,
        disks=[
            {"status": "running", "bytes_total": 3 << 30},
            {"status": "queued", "bytes_total": 0},
        ],
    )
    assert progress_line(p).endswith("done=1.5GiB/3.0GiB+1disks rate=- eta=-")
    assert "3.0 GiB (+1 disks)" in progress_bar(p) and "ETA -" in progress_bar(p)
    assert (size(None), size(512), duration(None), duration(3725)) == ("-", "512 B", "-", "1:02:05")


@pytest.mark.slow
def test_worker_heartbeat_makes_health_ok_and_sigterm_stops_it(
    served: dict[str, Any], tmp_path: Path
) -> None:
    url = served["url"]
    assert requests.get(f"{url}/health", timeout=5).json()["status"] == "degraded"
    env = {
        **served["env"],
        "OMA_POLL_INTERVAL": "0.5",
        "OMA_WORKER_ID": "cli-test-worker",
        "OMA_BY_ID_DIR": str(tmp_path / "by-id"),
        "OMA_LOG_LEVEL": "INFO",
    }
    worker = ManagedProcess(
        [sys.executable, "-m", "oma", "worker"],
        env=env,
        name="oma-worker",
        log_path=tmp_path / "worker.log",
    ).start()
    try:
        wait_until(
            lambda: (health(url) or {}).get("status") == "ok",
            what="worker heartbeat",
            proc=worker.proc,
        )
        body = requests.get(f"{url}/health", timeout=5).json()
        assert body["worker"]["worker_id"] == "cli-test-worker"
        wait_until(  # a few ticks of every scheduled job (each beat is one poll interval)
            lambda: (
                (health(url) or {}).get("worker", {}).get("seen_at") != body["worker"]["seen_at"]
            ),
            what="a later heartbeat",
            proc=worker.proc,
        )
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.proc.wait(60)  # a deadlock fails here (TimeoutExpired)
        assert code == 0, worker.log_text()
        # idle at INFO: no line per scheduler tick (APScheduler's "Running job" / "executed")
        log = worker.log_text()
        assert "Running job" not in log and "executed successfully" not in log, log
        assert len(log.splitlines()) < 30, log
    finally:
        worker.stop()


@pytest.mark.parametrize("server", ["postgres_url", "mariadb_url"])
def test_db_commands_on_server_databases(
    request: pytest.FixtureRequest, tmp_path: Path, server: str
) -> None:
    url = request.getfixturevalue(server)
    env = _env(tmp_path, OMA_DATABASE_URL=url)
    res = oma(env, "db", "upgrade")
    assert res.returncode == 0, res.stderr
    status = oma(env, "db", "status").stdout.strip().splitlines()
    assert status[0] == "[x] 0001_initial" and all(line.startswith("[x] ") for line in status)
    made = oma(env, "token", "create", "--name", f"cli-{server}", "--role", "viewer")
    assert made.returncode == 0 and made.stdout.split()[-1].startswith("oma_")


@pytest.mark.slow
def test_watch_survives_an_api_restart(served: dict[str, Any], tmp_path: Path) -> None:
    from oma.database import database, init_db
    from oma.database.repos import jobs

    env, url = served["env"], served["url"]
    job_id = _queue_job(served)
    watcher = _Watcher(env, job_id)
    restarted = None
    try:
        watcher.wait_for("status=pending")
        served["proc"].stop()
        port = int(url.rsplit(":", 1)[1])
        restarted = ManagedProcess(
            [sys.executable, "-m", "oma", "serve"],
            env=env,
            name="oma-serve-2",
            log_path=tmp_path / "serve2.log",
        ).start()
        restarted.wait_port(port)
        init_db(served["db"])
        with database.connection_context():
            jobs.complete_job(job_id, {"2000": "c1", "2001": "c2"})
        code, err = watcher.finish()
    finally:
        if watcher.proc.poll() is None:
            watcher.proc.kill()
            watcher.finish()
        if restarted is not None:
            restarted.stop()
    assert code == 0, err
    assert f"job {job_id} completed" in watcher.lines[-1]


FAILOVER_ARGS = ("--network", "VM Network=net-1", "--offering", "so-1")


def _failover_steps(db_url: str, wf_id: str, **status: str) -> None:
    from oma.database import database, init_db
    from oma.database.models import WorkflowStep

    init_db(db_url)
    with database.connection_context():
        for name, value in status.items():
            WorkflowStep.update(status=value, error="boom" if value == "failed" else None).where(
                WorkflowStep.workflow == wf_id, WorkflowStep.name == name
            ).execute()


def _failover_end(
    db_url: str, wf_id: str, status: str, *, error: str | None = None, **result: Any
) -> None:
    from oma.database import database, init_db
    from oma.database.models import Workflow

    init_db(db_url)
    with database.connection_context():
        Workflow.update(status=status, result=result or None, error=error).where(
            Workflow.id == wf_id
        ).execute()


@pytest.mark.slow
def test_failover_command_starts_watches_and_reports(served: dict[str, Any]) -> None:
    from oma.database import database, init_db
    from oma.database.models import Workflow
    from oma.database.repos import contexts

    env = served["env"]
    added = add_cli_vm(served)
    not_ready = oma(env, "failover", "cli-vm", *FAILOVER_ARGS)
    assert not_ready.returncode == ExitCode.CONFLICT
    assert "not ready_for_failover" in not_ready.stderr
    init_db(served["db"])
    with database.connection_context():
        contexts.set_state(added["id"], "ready_for_failover", ready_for_failover=True)

    bad = oma(env, "failover", "cli-vm", "--network", "VM Network", "--offering", "so-1")
    assert bad.returncode == ExitCode.USAGE and "SOURCE_NETWORK=CLOUDSTACK_NETWORK_ID" in bad.stderr
    started = oma(env, "failover", "cli-vm", *FAILOVER_ARGS, "--template", "tpl-1")
    assert started.returncode == 0, started.stderr
    wf_id = started.stdout.strip().splitlines()[-1]
    assert f"failover {wf_id} requested for cli-vm (pending)" in started.stdout
    with database.connection_context():
        params = Workflow.get_by_id(wf_id).params
    assert params["network_mappings"] == {"VM Network": "net-1"}
    assert (params["service_offering_id"], params["template_id"]) == ("so-1", "tpl-1")
    assert params["keep_macs"] is True and params["force"] is True
    again = oma(env, "failover", "cli-vm", *FAILOVER_ARGS)
    assert again.returncode == ExitCode.CONFLICT
    assert f"active failover ({wf_id})" in again.stderr.splitlines()[0]

    # the worker's part, played by the test: steps advance, then the failover completes
    _failover_end(served["db"], wf_id, "failed", error="validate: boom")  # resumed below
    watcher = _Watcher(
        env, "", "failover", "cli-vm", *FAILOVER_ARGS, "--watch", "--interval", "0.1"
    )
    try:
        watcher.wait_for(f"failover {wf_id} resumed for cli-vm")
        _failover_steps(served["db"], wf_id, validate="done", power_off_source="running")
        watcher.wait_for("step 2 power_off_source: running")
        _failover_steps(served["db"], wf_id, power_off_source="done", final_sync="done")
        watcher.wait_for("step 3 final_sync: done")
        _failover_end(
            served["db"],
            wf_id,
            "done",
            target_vm_id="vm-target-1",
            downtime_seconds=12.5,
            final_sync_bytes=3 << 20,
        )
        code, err = watcher.finish()
    finally:
        if watcher.proc.poll() is None:
            watcher.proc.kill()
            watcher.finish()
    assert code == 0, err
    assert "step 1 validate: done" in watcher.lines
    assert watcher.lines[-1] == (
        f"failover {wf_id} completed: target VM vm-target-1, downtime 12.5 s, final sync 3.0 MiB"
    )

    # a failed failover: one error line, exit code 9, a hint to resume or roll back
    with database.connection_context():
        Workflow.update(status="failed").where(Workflow.id == wf_id).execute()
    watcher = _Watcher(
        env, "", "failover", "cli-vm", *FAILOVER_ARGS, "--watch", "--interval", "0.1"
    )
    try:
        watcher.wait_for(f"failover {wf_id} resumed")
        _failover_steps(served["db"], wf_id, deploy_target="failed")
        _failover_end(served["db"], wf_id, "failed", error="deploy_target: boom")
        code, err = watcher.finish()
    finally:
        if watcher.proc.poll() is None:
            watcher.proc.kill()
            watcher.finish()
    assert code == ExitCode.JOB_FAILED
    assert err.splitlines()[0] == f"error: failover {wf_id} failed: deploy_target: boom"
    assert err.splitlines()[1] == (
        "hint: fix the cause and resume it with `oma failover retry cli-vm`, "
        "or undo it with `oma failover rollback cli-vm`"
    )
    assert "step 7 deploy_target: failed - boom" in watcher.lines

    # without --watch: a failover that fails at once (before the command's one re-read, an
    # --interval later) is an error, not exit 0; `oma failover show` tells its steps
    watcher = _Watcher(env, "", "failover", "cli-vm", *FAILOVER_ARGS, "--interval", "3")
    try:
        watcher.wait_for(f"failover {wf_id} resumed")
        _failover_end(served["db"], wf_id, "failed", error="validate: no such network")
        code, err = watcher.finish()
    finally:
        if watcher.proc.poll() is None:
            watcher.proc.kill()
            watcher.finish()
    assert code == ExitCode.JOB_FAILED, err
    assert err.splitlines()[0] == f"error: failover {wf_id} failed: validate: no such network"
    shown = oma(env, "failover", "show", "cli-vm")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith(f"failover {wf_id} of cli-vm: failed")
    assert "  error: validate: no such network" in shown.stdout


def _rollback_id(db_url: str, failover_id: str) -> str:
    from oma.database import database, init_db
    from oma.workflows.failover import store

    init_db(db_url)
    with database.connection_context():
        return store.rollback_of(failover_id).id


def _watch(env: dict[str, str], *args: str) -> _Watcher:
    return _Watcher(env, "", *args, "--watch", "--interval", "0.1")


def _finish(watcher: _Watcher) -> tuple[int, str]:
    try:
        return watcher.finish()
    finally:
        if watcher.proc.poll() is None:
            watcher.proc.kill()
            watcher.finish()


@pytest.mark.slow
def test_rollback_and_retry_commands(served: dict[str, Any]) -> None:
    from oma.database import database, init_db
    from oma.database.repos import contexts

    env, db = served["env"], served["db"]
    added = add_cli_vm(served)
    none = oma(env, "rollback", "cli-vm")
    assert none.returncode == ExitCode.NOT_FOUND
    assert none.stderr.splitlines() == [
        "error: cli-vm has no live failover",
        "hint: start one with `oma failover VM --network SRC=ID --offering ID`",
    ]
    init_db(db)
    with database.connection_context():
        contexts.set_state(added["id"], "ready_for_failover", ready_for_failover=True)
    wf_id = oma(env, "failover", "cli-vm", *FAILOVER_ARGS).stdout.strip().splitlines()[-1]

    busy = oma(env, "rollback", "cli-vm")
    assert busy.returncode == ExitCode.CONFLICT
    assert busy.stderr.splitlines()[0] == (
        f"error: failover {wf_id} is still running; wait for it to finish or fail"
    )
    # retry: only a failed failover; it resumes with its stored parameters
    _failover_end(db, wf_id, "done")
    refused = oma(env, "retry", "cli-vm")
    assert refused.returncode == ExitCode.CONFLICT
    assert refused.stderr.splitlines() == [
        f"error: failover {wf_id} is completed; only a failed one",
        "hint: only a failed failover is retried; roll back with `oma rollback cli-vm`",
    ]
    _failover_end(db, wf_id, "failed", error="deploy_target: boom")
    retried = oma(env, "retry", "cli-vm")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.splitlines() == [f"failover {wf_id} resumed for cli-vm (pending)", wf_id]

    # a rollback that fails: one error line, exit code 9, a hint to run it again
    _failover_end(db, wf_id, "failed", error="deploy_target: boom")
    watcher = _watch(env, "rollback", "cli-vm")
    watcher.wait_for(f"rollback of failover {wf_id} requested for cli-vm (pending)")
    rb_id = _rollback_id(db, wf_id)
    _failover_steps(db, rb_id, remove_target="done", revert_replicas="failed")
    watcher.wait_for("step 2 revert_replicas: failed - boom")
    _failover_end(db, rb_id, "failed", error="revert_replicas: boom")
    code, err = _finish(watcher)
    assert code == ExitCode.JOB_FAILED
    assert err.splitlines() == [
        f"error: rollback of failover {wf_id} failed: revert_replicas: boom",
        "hint: fix the cause and run `oma rollback cli-vm` again (it resumes)",
    ]
    assert "step 1 remove_target: done" in watcher.lines

    # run again: resumed; it completes and says which disk syncs in full next
    watcher = _watch(env, "rollback", "cli-vm")
    watcher.wait_for(f"rollback of failover {wf_id} resumed for cli-vm")
    _failover_steps(db, rb_id, revert_replicas="done", power_on_source="done")
    watcher.wait_for("step 3 power_on_source: done")
    why = "snapshot s-1 no longer exists in CloudStack"
    _failover_end(
        db, wf_id, "rolled_back", rollback={"chain_kept": False, "full_sync": {"2001": why}}
    )
    _failover_end(db, rb_id, "done")
    code, err = _finish(watcher)
    assert code == 0, err
    assert watcher.lines[-1] == (
        f"failover {wf_id} rolled back; the next sync is full for disk 2001 ({why})"
    )
    again = oma(env, "rollback", "cli-vm")
    assert again.returncode == ExitCode.CONFLICT
    assert again.stderr.splitlines() == [
        f"error: failover {wf_id} is already rolled back",
        "hint: a failover is rolled back once it has completed or failed, and once",
    ]


@pytest.mark.slow
def test_stop_command(served: dict[str, Any], tmp_path: Path) -> None:
    import sqlite3

    env = served["env"]
    pending = _queue_job(served)
    stopped = oma(env, "stop", pending)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines() == [f"job {pending} stopped"]
    assert oma(env, "job", pending).stdout.startswith(f"job={pending} status=stopped")
    finished = oma(env, "stop", pending)
    assert finished.returncode == ExitCode.CONFLICT
    assert finished.stderr.splitlines() == [
        f"error: job {pending} is already stopped",
        f"hint: the job has finished; see `oma job {pending}`",
    ]
    missing = oma(env, "stop", "no-such-job")
    assert missing.returncode == ExitCode.NOT_FOUND
    assert missing.stderr.splitlines()[0].startswith("error: ")

    # a running job: the worker stops it on the VMA
    running = oma(env, "replicate", "cli-vm").stdout.strip().splitlines()[-1]
    with sqlite3.connect(tmp_path / "data" / "oma.db") as db:  # as a worker's claim does
        db.execute(
            "UPDATE replication_jobs SET status = 'replicating', claimed_by = 'w1' WHERE id = ?",
            (running,),
        )
    flagged = oma(env, "stop", running)
    assert flagged.returncode == 0, flagged.stderr
    shown = oma(env, "job", running[:8]).stdout  # the pending stop shows until the VMA stopped
    assert shown.startswith(f"job={running} status=replicating(stop requested) ")
    assert "  stop requested: the worker is stopping it on the VMA" in shown
    assert flagged.stdout.splitlines() == [
        f"job {running} stop requested (replicating); follow it with `oma job {running} --watch`"
    ]
    with sqlite3.connect(tmp_path / "data" / "oma.db") as db:
        assert db.execute(
            "SELECT stop_requested FROM replication_jobs WHERE id = ?", (running,)
        ).fetchone() == (1,)
