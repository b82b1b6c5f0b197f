"""Job runner decisions that do not need vCenter: recovery after a restart, exit reasons,
job directory retention."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from datetime import timedelta

import pytest

from labtest.procs import wait_until
from migration_common import DiskProgress, Status, rfc3339, utcnow
from vma.services import processes, retention
from vma.services.progress import job_progress
from vma.services.runner import JobRunner, RunnerConfig, describe_exit
from vma.services.store import Job, JobDisk, database, init_db
from vma.services.vcenter import VcenterProvider


@pytest.fixture
def runner(tmp_path):
    init_db(tmp_path / "vma.db")
    config = RunnerConfig(data_dir=tmp_path, progress_url="http://127.0.0.1:9", env=os.environ)
    with database.connection_context():
        yield JobRunner(config, VcenterProvider(tmp_path))


def _dead_process(tmp_path):
    pid, start = processes.spawn(["true"], log_path=tmp_path / "true.log", env=os.environ)
    deadline = time.monotonic() + 10
    while processes.alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid, start


def _job(runner, job_id, *, exit_code=None, supervisor=None, progress=None):
    # exit.json first: a runner thread that ticks between the row and the file would see a
    # dead supervisor without an exit code and fail the job
    if exit_code is not None:
        work = runner.job_dir(job_id)
        work.mkdir(parents=True)
        (work / "exit.json").write_text(json.dumps({"returncode": exit_code}))
    job = Job.create(
        job_id=job_id,
        vm_id=f"vm-{job_id}",
        request="{}",
        status="running",
        supervisor_pid=supervisor[0] if supervisor else None,
        supervisor_start=supervisor[1] if supervisor else None,
    )
    disk = JobDisk.create(
        job=job, position=0, disk_key="2000", target_uri="nbd://x/y", change_id="gen-3"
    )
    if progress:
        JobDisk.update(seq=progress.seq, progress=progress.to_json()).where(
            JobDisk.id == disk.id
        ).execute()
    return job


def test_describe_exit():
    assert describe_exit(2) == "migratekit exited with code 2"
    assert describe_exit(-9) == "migratekit killed by signal 9 (SIGKILL)"
    assert describe_exit(-15) == "migratekit killed by signal 15 (SIGTERM)"
    assert "unknown" in describe_exit(None)


def test_job_that_finished_while_the_server_was_down_completes(runner, tmp_path):
    mid = DiskProgress(disk_key="2000", bytes_total=100, bytes_done=40, seq=4)
    _job(runner, "j-ok", exit_code=0, supervisor=_dead_process(tmp_path), progress=mid)
    runner.tick()
    job = Job.get_by_id("j-ok")
    assert job.status == "completed" and job.error is None and job.finished_at
    (disk,) = job_progress(job).disks
    assert disk.status is Status.COMPLETED and disk.change_id == "gen-3"
    assert disk.bytes_done == 100


def test_dead_process_with_failed_disk(runner, tmp_path):
    failed = DiskProgress(disk_key="2000", status="failed", error="target refused write", seq=7)
    _job(runner, "j-bad", exit_code=1, supervisor=_dead_process(tmp_path), progress=failed)
    runner.tick()
    job = Job.get_by_id("j-bad")
    assert job.status == "failed"
    assert job.error == "disk 2000: target refused write; migratekit exited with code 1"


def test_dead_process_without_exit_file(runner, tmp_path):
    _job(runner, "j-lost", supervisor=_dead_process(tmp_path))
    runner.tick()
    job = Job.get_by_id("j-lost")
    assert job.status == "failed" and "exit status unknown" in job.error
    (disk,) = job_progress(job).disks
    assert disk.status is Status.FAILED


def test_job_interrupted_while_starting_fails(runner):
    _job(runner, "j-start")
    runner.tick()
    job = Job.get_by_id("j-start")
    assert job.status == "failed"
    assert job.error == "VMA restarted while the job was starting"


def test_live_process_is_left_running(runner, tmp_path):
    pid, start = processes.spawn(["sleep", "30"], log_path=tmp_path / "s.log", env=os.environ)
    try:
        _job(runner, "j-live", supervisor=(pid, start))
        runner.recover()
        runner.tick()
        assert Job.get_by_id("j-live").status == "running"
    finally:
        processes.stop(pid, start, grace=1)
    runner.tick()
    assert Job.get_by_id("j-live").status == "failed"


def test_only_one_runner_supervises_a_data_directory(tmp_path):
    init_db(tmp_path / "vma.db")
    config = RunnerConfig(
        data_dir=tmp_path, progress_url="http://127.0.0.1:9", env=os.environ, poll_interval=0.05
    )
    first, second = (JobRunner(config, VcenterProvider(tmp_path)) for _ in range(2))
    lock_one = first._acquire_supervisor_lock()
    try:
        import threading

        got = {}
        t = threading.Thread(
            target=lambda: got.setdefault("lock", second._acquire_supervisor_lock())
        )
        t.start()
        t.join(0.5)
        assert t.is_alive()  # second waits while first holds the lock
        lock_one.close()
        t.join(10)
        assert got["lock"] is not None
        got["lock"].close()
    finally:
        lock_one.close()


def test_new_job_waits_for_a_finishing_job_of_the_same_vm(runner, tmp_path):
    import threading

    from vma.errors import JobConflictError

    done = DiskProgress(disk_key="2000", status="completed", phase="done", change_id="gen-3", seq=9)
    _job(runner, "j-fin", exit_code=0, supervisor=_dead_process(tmp_path), progress=done)

    def _later_tick():
        with database.connection_context():
            runner.tick()

    timer = threading.Timer(0.3, _later_tick)
    timer.start()
    runner._check_vm_idle("vm-j-fin")  # returns once the finishing job completed
    timer.join()
    assert Job.get_by_id("j-fin").status == "completed"

    busy = DiskProgress(disk_key="2000", bytes_total=10, bytes_done=5, seq=2)
    pid, start = processes.spawn(["sleep", "30"], log_path=tmp_path / "s.log", env=os.environ)
    try:
        _job(runner, "j-busy", supervisor=(pid, start), progress=busy)
        with pytest.raises(JobConflictError, match="already has an active job"):
            runner._check_vm_idle("vm-j-busy")
    finally:
        processes.stop(pid, start, grace=1)


class _SlowVcenter:
    """Stand-in for VSphereClient whose snapshot blocks until released (runner unit test)."""

    def __init__(self, gate, removed):
        self.gate, self.removed = gate, removed
        self.snapshotting = threading.Event()  # set once create_snapshot is waiting

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def get_vm(self, vm_id):
        return {"id": vm_id, "disks": [{"key": "2000"}]}

    def sweep_snapshots(self, vm_id, prefix, keep=None):
        return []

    def create_snapshot(self, vm_id, name, description=""):
        self.snapshotting.set()
        assert self.gate.wait(30)
        return "snapshot-1"

    def remove_snapshot(self, vm_id, snapshot_id):
        self.removed.append(snapshot_id)


def test_stop_while_starting_cancels_and_cleans_up(tmp_path, caplog):
    from vma.services.runner import DiskSpec, ReplicateSpec

    caplog.set_level(logging.INFO, logger="vma.services.runner")
    gate, removed = threading.Event(), []
    vcenter = _SlowVcenter(gate, removed)

    class Provider(VcenterProvider):
        def client(self, creds=None):
            return vcenter

    init_db(tmp_path / "vma.db")
    (tmp_path / "lab" / "vm-1").mkdir(parents=True)  # a lab VM (no vSphere source needed)
    config = RunnerConfig(
        data_dir=tmp_path,
        progress_url="http://127.0.0.1:9",
        env=os.environ,
        lab_dir=tmp_path / "lab",
    )
    runner = JobRunner(config, Provider(tmp_path))
    spec = ReplicateSpec("j-slow", "vm-1", (DiskSpec("2000", "nbd://127.0.0.1:1/x"),))
    with database.connection_context():
        runner.submit(spec)
        runner.tick()  # claims the job and starts it in a thread
        wait_until(vcenter.snapshotting.is_set, what="the start thread in the snapshot")
        assert Job.get_by_id("j-slow").status == "running"
        runner.tick()  # a tick while it starts must not fail it
        assert Job.get_by_id("j-slow").status == "running"
        result = {}
        stopper = threading.Thread(target=lambda: result.setdefault("job", runner.stop("j-slow")))
        stopper.start()
        wait_until(
            lambda: _records(caplog, "stop waits for the job to finish starting"),
            what="the stop request to wait for the start thread",
        )
        assert stopper.is_alive()  # the snapshot still holds the start thread
        gate.set()
        stopper.join(30)
        assert not stopper.is_alive()
        job = Job.get_by_id("j-slow")
        assert (job.status, job.error) == ("stopped", None)
        assert result["job"].status == "stopped"
        assert removed == ["snapshot-1"]
        (disk,) = job_progress(job).disks
        assert disk.status is Status.STOPPED


def test_vsphere_vm_gets_cbt_then_fails_cleanly_without_vddk(tmp_path):
    import threading

    from vma.services.runner import DiskSpec, ReplicateSpec
    from vma.services.vcenter import VcenterCredentials

    gate, removed, calls = threading.Event(), [], []
    gate.set()

    class Vc(_SlowVcenter):
        def enable_cbt(self, vm_id):
            calls.append(("enable_cbt", vm_id))
            return {"enabled": True, "supported": True}

        def server_thumbprint(self):
            return "AA:BB"

    class Provider(VcenterProvider):
        def client(self, creds=None):
            return Vc(gate, removed)

    init_db(tmp_path / "vma.db")
    config = RunnerConfig(data_dir=tmp_path, progress_url="http://127.0.0.1:9", env=os.environ)
    creds = VcenterCredentials("vc", 443, "u", "pw-123456")
    runner = JobRunner(config, Provider(tmp_path, creds))
    spec = ReplicateSpec("j-vs", "vm-9", (DiskSpec("2000", "nbd://127.0.0.1:1/x"),))
    with database.connection_context():
        runner.submit(spec)
        runner.tick()
        starter = runner._starting.get("j-vs")  # may already be done
        if starter is not None:
            starter.join(30)
        job = Job.get_by_id("j-vs")
    assert calls == [("enable_cbt", "vm-9")]
    assert job.status == "failed" and "no managed object reference" in job.error
    assert removed == ["snapshot-1"]


# -- job directory retention -----------------------------------------------------------------


def _finished(runner, job_id, status, days_ago, *, log_bytes=10_000):
    """A job row in ``status`` that finished ``days_ago`` days ago, with its job directory."""
    finished = None if days_ago is None else rfc3339(utcnow() - timedelta(days=days_ago))
    Job.create(
        job_id=job_id,
        vm_id=f"vm-{job_id}",
        request="{}",
        status=status,
        started_at=finished,
        finished_at=finished,
    )
    work = runner.job_dir(job_id)
    work.mkdir(parents=True)
    (work / "plan.json").write_text("{}")
    (work / "migratekit.log").write_bytes(b"x" * log_bytes)
    return work


def test_prune_removes_only_old_terminal_job_dirs(runner, tmp_path):
    old = [_finished(runner, f"old-{s}", s, 20) for s in ("completed", "failed", "stopped")]
    recent = _finished(runner, "recent", "completed", 1)
    running = _finished(runner, "running", "running", 20)  # active: never pruned
    queued = _finished(runner, "queued", "queued", None)
    orphan = runner.job_dir("no-such-job")  # a directory without a job row stays
    orphan.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    Job.create(
        job_id="linked",
        vm_id="vm-l",
        request="{}",
        status="failed",
        finished_at="2020-01-01T00:00:00Z",
    )
    runner.job_dir("linked").symlink_to(outside, target_is_directory=True)
    Job.create(
        job_id="..",
        vm_id="vm-dd",
        request="{}",
        status="failed",
        finished_at="2020-01-01T00:00:00Z",
    )

    result = runner.prune()
    assert (result.removed, result.failed) == (3, 0)
    assert result.bytes_freed >= 3 * 10_000
    assert not any(p.exists() for p in old)
    for kept in (recent, running, queued, orphan, tmp_path / "vma.db", outside / "keep.txt"):
        assert kept.exists(), kept
    assert runner.job_dir("linked").is_symlink()
    assert Job.select().count() == 8  # the rows stay: job history
    assert all(retention.dir_pruned(Job.get_by_id(p.name), p) for p in old)
    assert not retention.dir_pruned(Job.get_by_id("recent"), recent)

    # 14 days later the recent job's directory goes too; the active ones stay
    later = runner.prune(now=utcnow() + timedelta(days=14))
    assert later.removed == 1 and not recent.exists()
    assert running.exists() and queued.exists()
    assert runner.prune(now=utcnow() + timedelta(days=14)) == retention.PruneResult()


def test_retention_zero_keeps_every_job_dir(runner):
    runner.config.job_retention_days = 0
    work = _finished(runner, "ancient", "completed", 3000)
    assert runner.prune(now=utcnow() + timedelta(days=10_000)) == retention.PruneResult()
    assert (work / "migratekit.log").exists()


def test_job_that_never_started_has_no_pruned_log(runner):
    job = Job.create(
        job_id="q", vm_id="vm-q", request="{}", status="stopped", finished_at="2020-01-01T00:00:00Z"
    )
    assert not retention.dir_pruned(job, runner.job_dir("q"))  # stopped while queued: no dir


def _records(caplog, message):
    return [r for r in caplog.records if r.getMessage() == message]


def test_loop_prunes_after_recovery_then_once_per_interval(runner, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vma.services.runner")
    runner.config.poll_interval = 0.02  # prune_interval stays at one hour
    first = _finished(runner, "first", "completed", 30)
    runner.start()
    try:
        wait_until(lambda: _records(caplog, "job directories pruned"), 10, what="a prune pass")
        assert not first.exists()
        (line,) = _records(caplog, "job directories pruned")
        assert line.fields["removed"] == 1 and line.fields["bytes_freed"] >= 10_000
        assert line.fields["retention_days"] == 14
        second = _finished(runner, "second", "failed", 30)
        # the loop goes on ticking (it finishes this job) but does not prune again this hour
        _job(runner, "j-done", exit_code=0, supervisor=_dead_process(tmp_path))
        wait_until(lambda: Job.get_by_id("j-done").status == "completed", 10, what="a tick")
        assert second.exists()
        assert len(_records(caplog, "job directories pruned")) == 1
    finally:
        runner.shutdown()


@pytest.mark.parametrize("failure", ["one directory", "whole pass"])
def test_prune_errors_are_logged_and_supervision_goes_on(
    runner, tmp_path, caplog, monkeypatch, failure
):
    caplog.set_level(logging.INFO, logger="vma.services.runner")
    runner.config.poll_interval, runner.config.prune_interval = 0.02, 0.2
    removable = _finished(runner, "removable", "completed", 30)
    locked = _finished(runner, "locked", "completed", 30)
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if failure == "whole pass":
            raise RuntimeError("unexpected failure")
        if path == locked:  # the tests run as root, so chmod cannot make it fail
            raise PermissionError(13, "Permission denied", str(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(retention.shutil, "rmtree", rmtree)
    runner.start()
    try:
        if failure == "one directory":
            message = "job directories pruned with errors"
            wait_until(lambda: len(_records(caplog, message)) >= 2, 10, what="two prune passes")
            line = _records(caplog, message)[0]
            assert (line.fields["removed"], line.fields["failed"]) == (1, 1)
            assert "locked: PermissionError" in line.fields["error"]
            assert not removable.exists() and locked.exists()
        else:
            message = "job directory prune failed"
            wait_until(lambda: len(_records(caplog, message)) >= 2, 10, what="two prune passes")
            assert removable.exists() and locked.exists()
        _job(runner, "j-after", exit_code=0, supervisor=_dead_process(tmp_path))
        wait_until(lambda: Job.get_by_id("j-after").status == "completed", 10, what="a tick")
    finally:
        runner.shutdown()
