"""A full copy killed mid-way resumes: through the real server (gunicorn), vcsim, a lab VM
(qcow2 + qemu-nbd), migratekit spawned by the job runner and a throttled nbdkit target."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from labtest.labvm import create_lab_vm, lab_disk_sha256
from labtest.procs import wait_until
from labtest.vcsim import vcsim
from labtest.vma import vma_server
from vma.sources.bitmaps import list_bitmaps

from .test_replication_lab import _body, _our_snapshots, _raw, slow_target

pytestmark = pytest.mark.slow
MiB = 1 << 20
SIZE = 16 * MiB


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    with vcsim(base) as vc:
        yield base, vc


@pytest.fixture
def vma(lab, tmp_path):
    base, vc = lab
    # checkpoints every 100 ms, and few small requests in flight (a throttled target completes
    # concurrent writes out of order: the safe offset is the lowest unfinished one)
    env = {
        "MIGRATEKIT_CHECKPOINT_INTERVAL": "0.1",
        "MIGRATEKIT_REQUEST_SIZE": "128K",
        "MIGRATEKIT_WINDOW": "2",
    }
    with vma_server(tmp_path, vcenter=vc, lab_dir=base / "images", env=env) as info:
        yield info


def _disk(vma, job_id):
    return vma.get(f"jobs/{job_id}")["progress"]["disks"][0]


def _checkpoint(vma, job_id, key):
    path = vma.data_dir / "jobs" / job_id / "checkpoints" / f"disk-{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_kill_9_at_half_then_retry_resumes_and_ends_identical(lab, vma, tmp_path):
    base, _ = lab
    vm = create_lab_vm(lab[1], base / "images", "lab-resume", [SIZE], fill="random", seed=11)
    key = vm["disks"][0]["key"]
    raw = _raw(tmp_path / "target.raw", SIZE)
    with slow_target(raw, rate="16M") as uri:  # 2 MB/s: the copy takes about 8 s
        job1 = str(uuid.uuid4())
        vma.post("replicate", _body(job1, vm, {key: uri}))

        def half() -> bool:
            d = _disk(vma, job1)
            return d["bytes_total"] > 0 and d["bytes_done"] >= d["bytes_total"] // 2

        wait_until(half, 60, interval=0.05, what="job 1 at 50 %")
        os.kill(vma.get(f"jobs/{job1}")["pid"], signal.SIGKILL)
        failed = vma.wait_job(job1)
        assert failed["status"] == "failed" and "signal 9" in failed["error"]
        safe = _checkpoint(vma, job1, key)["safe_offset"]
        assert 0 < safe < SIZE
        # the failed full copy keeps its snapshot for the retry
        kept = _our_snapshots(lab, vm["id"])
        assert [s["name"] for s in kept] == [f"ossea-migrate-{job1}"]

        job2 = str(uuid.uuid4())
        body = {**_body(job2, vm, {key: uri}), "resume_from_job": job1}
        status, answer = vma.request("POST", "replicate", body)
        assert status == 202
        assert answer["resume"] == {
            "from_job": job1,
            "resumed": True,
            "reason": None,
            "disks": {key: safe},
        }
        done = vma.wait_job(job2)
    assert done["status"] == "completed", done
    disk = done["progress"]["disks"][0]
    # the retry moved only what the checkpoint did not cover: at most 60 % of the disk
    assert disk["bytes_total"] == SIZE - safe
    assert disk["bytes_done"] == SIZE - safe <= 0.6 * SIZE
    assert lab_disk_sha256(vm["images"][key]) == lab_disk_sha256(raw, "raw")
    # the data came from job 1's snapshot: job 1's change ID (its bitmap generation, which
    # records every write since job 1 began) is reported, and kept on the image
    plan1 = json.loads((vma.data_dir / "jobs" / job1 / "plan.json").read_text())
    first_gen = plan1["disks"][0]["change_id"]
    assert disk["change_id"] == first_gen
    names = [b.name for b in list_bitmaps(Path(vm["images"][key]))]
    assert names[0] == first_gen and len(names) == 2  # the retry's own generation is newer
    assert vma.get(f"jobs/{job2}")["resume"]["resumed"] is True
    assert _our_snapshots(lab, vm["id"]) == []  # the resumed job removed it when done


def test_resume_from_an_unknown_or_unfit_job_copies_from_zero(lab, vma, tmp_path):
    base, _ = lab
    vm = create_lab_vm(lab[1], base / "images", "lab-no-resume", [4 * MiB], seed=12)
    key = vm["disks"][0]["key"]
    raw = _raw(tmp_path / "target.raw", 4 * MiB)
    with slow_target(raw, rate="1G") as uri:
        job1 = str(uuid.uuid4())
        body = {**_body(job1, vm, {key: uri}), "resume_from_job": "no-such-job"}
        status, answer = vma.request("POST", "replicate", body)
        assert status == 202
        assert answer["resume"]["resumed"] is False
        assert answer["resume"]["reason"] == "no job 'no-such-job'"
        done = vma.wait_job(job1)
        assert done["status"] == "completed"
        assert done["progress"]["disks"][0]["bytes_total"] > 0
        # a completed job is not resumed from: the next full copy starts from zero
        job2 = str(uuid.uuid4())
        body = {**_body(job2, vm, {key: uri}), "resume_from_job": job1}
        answer = vma.post("replicate", body)
        assert answer["resume"]["resumed"] is False
        assert answer["resume"]["reason"] == f"job {job1} is completed, not failed or stopped"
        assert vma.wait_job(job2)["status"] == "completed"
    assert lab_disk_sha256(vm["images"][key]) == lab_disk_sha256(raw, "raw")
    status, bad = vma.request(
        "POST", "replicate", {**_body("x1", vm, {key: uri}), "resume_from_job": "bad id!"}
    )
    assert status == 422 and "resume_from_job" in json.dumps(bad)
