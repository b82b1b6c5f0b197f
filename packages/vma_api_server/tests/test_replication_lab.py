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
def slow_target(path: Path, rate: str = "2M"):
    """A raw file behind nbdkit with a bandwidth limit, so a job runs for a few seconds."""
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


def _body(job_id, vm, targets, previous=None):
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
        "options": {"verify": False, "target_is_zero": True},
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
        assert vma.request("POST", "replicate", _body(job2, vm, targets, change))[0] == 202
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
