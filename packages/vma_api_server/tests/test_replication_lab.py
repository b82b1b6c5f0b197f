"""End to end through the real server: vcsim + lab VM (qcow2 + qemu-nbd) → NBD targets.

Real parts only: vcsim (labtest.vcsim), the gunicorn-run vma-api-server (labtest.vma),
migratekit spawned by the job runner, qemu-nbd sources and qemu-nbd/nbdkit targets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import pytest

from labtest.labvm import create_lab_vm, lab_disk_sha256, write_lab_disk
from labtest.nbd import qemu_nbd
from labtest.procs import ManagedProcess, free_port, wait_until
from labtest.vcsim import vcsim
from labtest.vma import vma_server
from migration_common import parse_job_progress
from vma.services.resume import checkpoint_offsets
from vma.sources.bitmaps import list_bitmaps
from vma.vmware import VSphereClient

pytestmark = pytest.mark.slow
MiB = 1 << 20


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    with vcsim(base) as vc:
        yield base, vc


@pytest.fixture
def vma(lab, tmp_path):
    base, vc = lab
    with vma_server(tmp_path, vcenter=vc, lab_dir=base / "images") as info:
        yield info


def _vm(lab, name, sizes, seed=0):
    base, vc = lab
    return create_lab_vm(vc, base / "images", name, sizes, seed=seed)


def _raw(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


@contextlib.contextmanager
def slow_target(path: Path, rate: str = "16M"):
    """A raw file behind nbdkit with a bandwidth limit (bits/s), so a job runs a few seconds."""
    port = free_port()
    argv = [
        "nbdkit",
        "-f",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "--filter=rate",
        "file",
        str(path),
        f"rate={rate}",
    ]
    proc = ManagedProcess(argv, log_path=str(path) + ".nbdkit.log", name="nbdkit")
    proc.start()
    try:
        proc.wait_port(port)
        yield f"nbd://127.0.0.1:{port}/"
    finally:
        proc.stop()


def _body(job_id, vm, targets, previous=None, verify=False):
    return {
        "job_id": job_id,
        "vm_id": vm["id"],
        "disks": [
            {
                "disk_key": d["key"],
                "target_uri": targets[d["key"]],
                "previous_change_id": (previous or {}).get(d["key"]),
            }
            for d in vm["disks"]
        ],
        "options": {"verify": verify, "target_is_zero": previous is None},
    }


def _our_snapshots(lab, vm_id):
    _, vc = lab
    with VSphereClient(vc.host, vc.username, vc.password, port=vc.port, insecure=True) as c:
        return [s for s in c.list_snapshots(vm_id) if s["name"].startswith("ossea-migrate-")]


def test_full_then_incremental_moves_only_changed_blocks(lab, vma, tmp_path):
    vm = _vm(lab, "lab-full-incr", [8 * MiB, 4 * MiB], seed=1)
    keys = [d["key"] for d in vm["disks"]]
    raws = {
        k: _raw(tmp_path / f"target-{k}.raw", d["capacity_bytes"])
        for k, d in zip(keys, vm["disks"], strict=True)
    }
    with contextlib.ExitStack() as stack:
        exports = {k: stack.enter_context(qemu_nbd(raws[k], fmt="raw")) for k in keys}
        targets = {k: e.uri for k, e in exports.items()}

        # a leftover snapshot of ours (a crashed earlier job) is swept by the next job
        _, vc = lab
        with VSphereClient(vc.host, vc.username, vc.password, port=vc.port, insecure=True) as c:
            c.create_snapshot(vm["id"], "ossea-migrate-leftover")
        job1 = str(uuid.uuid4())
        status, res = vma.request("POST", "replicate", _body(job1, vm, targets))
        assert status == 202 and res == {"job_id": job1, "status": "queued"}
        # the same request again is idempotent
        assert vma.request("POST", "replicate", _body(job1, vm, targets))[0] == 202
        done = vma.wait_job(job1)
        assert done["status"] == "completed", done
        progress = parse_job_progress(vma.get(f"progress/{job1}"))
        assert progress.status.value == "completed" and progress.percent == 100.0
        change = {d.disk_key: d.change_id for d in progress.disks}
        assert change == {k: "gen-1" for k in keys}
        assert {d.sync_type.value for d in progress.disks} == {"full"}
        for k in keys:
            assert lab_disk_sha256(vm["images"][k]) == lab_disk_sha256(raws[k], "raw")
            assert [b.name for b in list_bitmaps(Path(vm["images"][k]))] == ["gen-1"]
        assert _our_snapshots(lab, vm["id"]) == []

        # change two blocks of disk 1 (one of them to zeroes) and one block of disk 2
        write_lab_disk(lab[0] / "images", vm["id"], keys[0], 1 * MiB, os.urandom(65536))
        write_lab_disk(lab[0] / "images", vm["id"], keys[0], 3 * MiB, (0, 65536))
        write_lab_disk(lab[0] / "images", vm["id"], keys[1], 2 * MiB, (0x5A, 65536))

        job2 = str(uuid.uuid4())
        body2 = _body(job2, vm, targets, change, verify=True)
        assert vma.request("POST", "replicate", body2)[0] == 202
        done = vma.wait_job(job2)
        assert done["status"] == "completed", done
        progress = parse_job_progress(done["progress"])
        assert progress.sync_type.value == "incremental"
        by_key = {d.disk_key: d for d in progress.disks}
        assert by_key[keys[0]].bytes_total == 2 * 65536
        assert by_key[keys[1]].bytes_total == 65536
        assert {d.change_id for d in progress.disks} == {"gen-2"}
        for k in keys:
            assert lab_disk_sha256(vm["images"][k]) == lab_disk_sha256(raws[k], "raw")
            assert [b.name for b in list_bitmaps(Path(vm["images"][k]))] == ["gen-2"]


def _wait_copying(vma, job_id):
    """Wait until migratekit runs and reported some bytes; return the job document."""
    box = {}

    def _copying():
        job = vma.get(f"jobs/{job_id}")
        box["job"] = job
        assert job["status"] in ("queued", "running"), job
        return job["pid"] and any(d["bytes_done"] > 0 for d in job["progress"]["disks"])

    wait_until(_copying, 60, interval=0.05, what=f"job {job_id} copying")
    return box["job"]


def _sources_alive(vma, job_id):
    from vma.services import processes

    servers = _job_row(vma, job_id)["servers"]
    return [s for s in servers if processes.alive(s["pid"], s["start"])]


def _job_row(vma, job_id):
    import json
    import sqlite3

    with contextlib.closing(sqlite3.connect(vma.data_dir / "vma.db")) as db:
        row = db.execute("SELECT source_state FROM job WHERE job_id = ?", (job_id,)).fetchone()
    return json.loads(row[0]) if row and row[0] else {"servers": []}


@contextlib.contextmanager
def _copying_job(lab, vma, tmp_path, name, seed, rate):
    """An 8 MiB one-disk lab VM replicating into a raw target throttled to ``rate`` bits/s.

    Yields (vm, raw target path, job document) once migratekit has copied some bytes but not
    all of them; the target server stops when the block ends.
    """
    vm = _vm(lab, name, [8 * MiB], seed=seed)
    key = vm["disks"][0]["key"]
    raw = _raw(tmp_path / "target.raw", vm["disks"][0]["capacity_bytes"])
    with slow_target(raw, rate=rate) as uri:
        job_id = str(uuid.uuid4())
        vma.post("replicate", _body(job_id, vm, {key: uri}))
        job = _wait_copying(vma, job_id)
        disk = job["progress"]["disks"][0]
        assert disk["bytes_done"] < disk["bytes_total"]
        yield vm, raw, job


def test_restart_mid_job_completes(lab, vma, tmp_path):
    with _copying_job(lab, vma, tmp_path, "lab-restart", seed=2, rate="8M") as (vm, raw, job):
        job_id, pid = job["job_id"], job["pid"]
        os.kill(pid, signal.SIGSTOP)  # hold migratekit still while the API restarts
        try:
            vma.restart()
            again = vma.get(f"jobs/{job_id}")
            assert again["status"] == "running" and again["pid"] == pid
        finally:
            os.kill(pid, signal.SIGCONT)
        done = vma.wait_job(job_id)
    assert done["status"] == "completed", done
    disk = done["progress"]["disks"][0]
    assert disk["status"] == "completed" and disk["change_id"] == "gen-1"
    assert lab_disk_sha256(vm["images"][disk["disk_key"]]) == lab_disk_sha256(raw, "raw")
    assert _sources_alive(vma, job_id) == []
    assert _our_snapshots(lab, vm["id"]) == []


def test_kill_9_migratekit_fails_job_with_reason(lab, vma, tmp_path):
    with _copying_job(lab, vma, tmp_path, "lab-kill", seed=3, rate="1M") as (vm, _raw_path, job):
        job_id, key = job["job_id"], vm["disks"][0]["key"]
        os.kill(job["pid"], signal.SIGKILL)
        done = vma.wait_job(job_id)
    assert done["status"] == "failed"
    assert "migratekit killed by signal 9 (SIGKILL)" in done["error"]
    log = vma.get(f"jobs/{job_id}/log")
    assert log["size"] > 0 and "job started" in log["log"]
    assert vma.get(f"jobs/{job_id}/log?tail_bytes=10")["truncated"] is True
    disk = done["progress"]["disks"][0]
    assert disk["status"] == "failed" and "signal 9" in disk["error"]
    assert _sources_alive(vma, job_id) == []
    # the snapshot stays only when the full copy left a checkpoint a retry can resume from
    # (test_resume_lab.py); otherwise it is removed
    offsets = checkpoint_offsets(vma.data_dir / "jobs" / job_id)
    kept = [s["name"] for s in _our_snapshots(lab, vm["id"])]
    assert kept == ([f"ossea-migrate-{job_id}"] if any(offsets.values()) else [])
    # the failed sync kept gen-0 and added gen-1: a retry can still go incremental from gen-0
    assert [b.name for b in list_bitmaps(Path(vm["images"][key]))] == ["gen-0", "gen-1"]


def test_stop_running_job(lab, vma, tmp_path):
    with _copying_job(lab, vma, tmp_path, "lab-stop", seed=4, rate="1M") as (vm, _raw_path, job):
        job_id = job["job_id"]
        stopped = vma.post(f"jobs/{job_id}/stop")
        assert stopped["status"] == "stopped"
        assert stopped["progress"]["disks"][0]["status"] == "stopped"
        from vma.services import processes

        assert not processes.alive(job["pid"], None)
    assert _sources_alive(vma, job_id) == []
    # as after a kill: the snapshot stays only when a checkpoint lets a retry resume the copy
    offsets = checkpoint_offsets(vma.data_dir / "jobs" / job_id)
    kept = [s["name"] for s in _our_snapshots(lab, vm["id"])]
    assert kept == ([f"ossea-migrate-{job_id}"] if any(offsets.values()) else [])
    # stopping again is harmless; the VM is free for a new job
    assert vma.post(f"jobs/{job_id}/stop")["status"] == "stopped"


def test_replicate_conflicts_and_unknowns(lab, vma, tmp_path):
    vm = _vm(lab, "lab-conflict", [4 * MiB], seed=5)
    key = vm["disks"][0]["key"]
    raw = _raw(tmp_path / "target.raw", vm["disks"][0]["capacity_bytes"])
    with slow_target(raw, rate="2M") as uri:
        job_id = str(uuid.uuid4())
        body = _body(job_id, vm, {key: uri})
        vma.post("replicate", body)
        other = dict(body, options={"verify": True, "target_is_zero": True})
        status, err = vma.request("POST", "replicate", other)
        assert status == 409 and "different content" in err["error"]["message"]
        status, err = vma.request("POST", "replicate", dict(body, job_id=str(uuid.uuid4())))
        assert status == 409 and "already has an active job" in err["error"]["message"]
        vma.post(f"jobs/{job_id}/stop")

    status, err = vma.request("POST", "replicate", dict(body, job_id="x1", vm_id="no-such-vm"))
    assert status == 404 and err["error"]["field"] == "vm_id"
    bad = _body("x2", vm, {key: uri})
    bad["disks"][0]["disk_key"] = "999999"
    status, err = vma.request("POST", "replicate", bad)
    assert status == 422 and err["error"]["field"] == "disks.0.disk_key"
    status, _ = vma.request("POST", "replicate", body, token=None)
    assert status == 401


def test_concurrency_limit_queues_jobs(lab, tmp_path):
    base, vc = lab
    vms = [_vm(lab, f"lab-queue-{i}", [4 * MiB], seed=10 + i) for i in range(2)]
    env = {"VMA_MAX_CONCURRENT_JOBS": "1"}
    with (
        vma_server(tmp_path, vcenter=vc, lab_dir=base / "images", env=env) as vma,
        contextlib.ExitStack() as stack,
    ):
        ids = []
        for i, vm in enumerate(vms):
            key = vm["disks"][0]["key"]
            raw = _raw(tmp_path / f"t{i}.raw", vm["disks"][0]["capacity_bytes"])
            uri = stack.enter_context(slow_target(raw, rate="8M"))
            ids.append(str(uuid.uuid4()))
            vma.post("replicate", _body(ids[-1], vm, {key: uri}))
        _wait_copying(vma, ids[0])
        assert vma.get(f"jobs/{ids[1]}")["status"] == "queued"
        batch = vma.get(f"progress?job_ids={ids[0]},{ids[1]},nope")
        assert [j["status"] for j in batch["jobs"]] == ["running", "queued"]
        assert batch["not_found"] == ["nope"]
        assert vma.wait_job(ids[0])["status"] == "completed"
        assert vma.wait_job(ids[1])["status"] == "completed"


def test_fixture_cleans_up_after_a_crashed_server(lab, tmp_path):
    from vma.services import processes

    base, vc = lab
    vm = _vm(lab, "lab-crash", [8 * MiB], seed=6)
    key = vm["disks"][0]["key"]
    raw = _raw(tmp_path / "target.raw", vm["disks"][0]["capacity_bytes"])
    with slow_target(raw, rate="2M") as uri:
        with vma_server(tmp_path / "s", vcenter=vc, lab_dir=base / "images") as vma:
            job_id = str(uuid.uuid4())
            vma.post("replicate", _body(job_id, vm, {key: uri}))
            job = _wait_copying(vma, job_id)
            servers = _job_row(vma, job_id)["servers"]
            vma.process.kill(signal.SIGKILL)  # the API dies; migratekit and qemu-nbd live on
            assert processes.alive(job["pid"], None)
        assert not processes.alive(job["pid"], None)
        assert not [s for s in servers if processes.alive(s["pid"], s["start"])]


def test_supervisor_killed_migratekit_is_not_left_behind(lab, vma, tmp_path):
    import sqlite3

    from vma.services import processes

    vm = _vm(lab, "lab-supervisor", [8 * MiB], seed=7)
    key = vm["disks"][0]["key"]
    raw = _raw(tmp_path / "target.raw", vm["disks"][0]["capacity_bytes"])
    with slow_target(raw, rate="2M") as uri:
        job_id = str(uuid.uuid4())
        vma.post("replicate", _body(job_id, vm, {key: uri}))
        job = _wait_copying(vma, job_id)
        with contextlib.closing(sqlite3.connect(vma.data_dir / "vma.db")) as db:
            (supervisor,) = db.execute(
                "SELECT supervisor_pid FROM job WHERE job_id = ?", (job_id,)
            ).fetchone()
        os.kill(supervisor, signal.SIGKILL)  # only the supervisor: migratekit is orphaned
        done = vma.wait_job(job_id)
    assert done["status"] == "failed" and "exit status unknown" in done["error"]
    assert not processes.alive(job["pid"], None)
    assert _sources_alive(vma, job_id) == []
