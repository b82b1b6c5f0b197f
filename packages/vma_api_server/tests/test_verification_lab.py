"""Verification and canonical VM ids through the real server: vcsim, the gunicorn-run
vma-api-server, migratekit spawned by the job runner, qemu-nbd sources and targets."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from labtest.labvm import create_lab_vm, lab_disk_sha256, write_lab_disk
from labtest.nbd import qemu_nbd
from labtest.procs import ManagedProcess, free_port, wait_until
from labtest.vcsim import vcsim
from labtest.vma import vma_server

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


def _raw(path: Path, size: int, garbage_at: int | None = None) -> Path:
    """A sparse raw target of ``size`` bytes; 64 KiB of 0xEE at ``garbage_at`` if given."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        if garbage_at is not None:
            fh.seek(garbage_at)
            fh.write(b"\xee" * 65536)
    return path


def _body(job_id, vm_id, disks, *, verify, target_is_zero, previous=None):
    return {
        "job_id": job_id,
        "vm_id": vm_id,
        "disks": [
            {"disk_key": k, "target_uri": uri, "previous_change_id": (previous or {}).get(k)}
            for k, uri in disks.items()
        ],
        "options": {"verify": verify, "target_is_zero": target_is_zero},
    }


def _disks(job):
    return {d["disk_key"]: d for d in job["progress"]["disks"]}


def test_verified_syncs_report_the_digests_of_the_bytes_they_covered(lab, vma, tmp_path):
    base, vc = lab
    vm = create_lab_vm(vc, base / "images", "lab-verify", [8 * MiB, 4 * MiB], seed=7)
    keys = [d["key"] for d in vm["disks"]]
    raws = {
        d["key"]: _raw(tmp_path / f"t-{d['key']}.raw", d["capacity_bytes"]) for d in vm["disks"]
    }
    with contextlib.ExitStack() as stack:
        targets = {k: stack.enter_context(qemu_nbd(raws[k], fmt="raw")).uri for k in keys}
        job1 = str(uuid.uuid4())
        vma.post("replicate", _body(job1, vm["id"], targets, verify=True, target_is_zero=True))
        done = vma.wait_job(job1)
        assert done["status"] == "completed", done
        for key, disk in _disks(done).items():
            # a full copy covers the whole disk: both digests are the disk's sha256, computed
            # here independently from the source image and from the replica file
            source = lab_disk_sha256(vm["images"][key])
            assert disk["verified"] is True
            assert disk["source_sha256"] == source
            assert disk["target_sha256"] == lab_disk_sha256(raws[key], "raw") == source

        # an incremental verifies the changed ranges: here one written 64 KiB block
        block = os.urandom(65536)
        write_lab_disk(base / "images", vm["id"], keys[0], 2 * MiB, block)
        previous = {k: d["change_id"] for k, d in _disks(done).items()}
        job2 = str(uuid.uuid4())
        body = _body(job2, vm["id"], targets, verify=True, target_is_zero=False, previous=previous)
        vma.post("replicate", body)
        done = vma.wait_job(job2)
        assert done["status"] == "completed", done
        disks = _disks(done)
        assert disks[keys[0]]["bytes_total"] == 65536
        assert disks[keys[0]]["source_sha256"] == hashlib.sha256(block).hexdigest()
        assert disks[keys[0]]["target_sha256"] == disks[keys[0]]["source_sha256"]
        assert disks[keys[1]]["source_sha256"] == hashlib.sha256(b"").hexdigest()
        assert {d["verified"] for d in disks.values()} == {True}

        # without verify nothing is read back and nothing claimed
        job3 = str(uuid.uuid4())
        previous = {k: d["change_id"] for k, d in disks.items()}
        vma.post(
            "replicate",
            _body(job3, vm["id"], targets, verify=False, target_is_zero=False, previous=previous),
        )
        done = vma.wait_job(job3)
        assert done["status"] == "completed", done
        assert {(d["verified"], d["source_sha256"]) for d in _disks(done).values()} == {
            (None, None)
        }


def test_a_replica_that_does_not_read_back_the_source_fails_verification(lab, vma, tmp_path):
    """The target claims to be zeroed (target_is_zero) but holds 64 KiB of old data where the
    source has a hole: the copy skips the hole, verification reads the old data back."""
    base, vc = lab
    vm = create_lab_vm(vc, base / "images", "lab-mismatch", [4 * MiB], fill="zero")
    key = vm["disks"][0]["key"]
    write_lab_disk(base / "images", vm["id"], key, 0, os.urandom(MiB))
    raw = _raw(tmp_path / "target.raw", 4 * MiB, garbage_at=3 * MiB)
    with qemu_nbd(raw, fmt="raw") as target:
        job_id = str(uuid.uuid4())
        vma.post(
            "replicate",
            _body(job_id, vm["id"], {key: target.uri}, verify=True, target_is_zero=True),
        )
        done = vma.wait_job(job_id)
    assert done["status"] == "failed", done
    disk = _disks(done)[key]
    assert disk["status"] == "failed" and disk["phase"] == "verify"
    assert disk["verified"] is False
    assert disk["source_sha256"] == lab_disk_sha256(vm["images"][key])
    assert disk["target_sha256"] == lab_disk_sha256(raw, "raw") != disk["source_sha256"]
    assert "verification failed" in disk["error"] and disk["source_sha256"] in disk["error"]
    assert "migratekit exited with code 3" in done["error"]


@contextlib.contextmanager
def _slow_target(path: Path, rate: str = "8M"):
    """A raw file behind nbdkit with a bandwidth limit (bits/s), so a job runs a few seconds."""
    port = free_port()
    argv = ["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(port), "--filter=rate", "file"]
    proc = ManagedProcess(
        [*argv, str(path), f"rate={rate}"], log_path=str(path) + ".nbdkit.log", name="nbdkit"
    )
    proc.start()
    try:
        proc.wait_port(port)
        yield f"nbd://127.0.0.1:{port}/"
    finally:
        proc.stop()


def test_one_vm_in_two_spellings_cannot_have_two_active_jobs(lab, vma, tmp_path):
    base, vc = lab
    vm = create_lab_vm(vc, base / "images", "lab-case", [8 * MiB], seed=3)
    key = vm["disks"][0]["key"]
    upper = f" {vm['id'].upper()} "
    raw = _raw(tmp_path / "target.raw", 8 * MiB)
    with _slow_target(raw) as uri:
        job1 = str(uuid.uuid4())
        vma.post("replicate", _body(job1, upper, {key: uri}, verify=False, target_is_zero=True))
        job = vma.get(f"jobs/{job1}")
        assert job["vm_id"] == vm["id"]  # stored canonical: the UUID in lower case

        def copying() -> bool:
            disk = vma.get(f"jobs/{job1}")["progress"]["disks"][0]
            return 0 < disk["bytes_done"] < disk["bytes_total"]

        wait_until(copying, 60, interval=0.05, what=f"job {job1} copying")
        job2 = str(uuid.uuid4())
        status, res = vma.request(
            "POST",
            "replicate",
            _body(job2, vm["id"], {key: uri}, verify=False, target_is_zero=True),
        )
        assert status == 409 and job1 in res["error"]["message"], res
        # the VM routes take either spelling and answer with the canonical id
        got = vma.get(f"vms/{quote(vm['id'].upper())}/power")
        assert got["vm_id"] == vm["id"]
        vma.post(f"jobs/{job1}/stop")
    assert [j["job_id"] for j in vma.get("jobs")["jobs"]] == [job1]


@pytest.mark.parametrize("bad", ["\n", "\x00", "\x7f", "\u200b"])
def test_a_vm_id_with_a_control_character_is_refused_naming_the_field(lab, vma, bad):
    vm_id = f"4200abcd-0000-4000-{bad}8000-0000000000ef"  # surrounding blanks are stripped
    status, res = vma.request("GET", f"vms/{quote(vm_id)}/power")
    assert status == 400 and res["error"]["field"] == "vm_id", res
    assert "control character" in res["error"]["message"]
    body = _body("j-ctl", vm_id, {"2000": "nbd://127.0.0.1:1/"}, verify=False, target_is_zero=True)
    status, res = vma.request("POST", "replicate", body)
    # the strict JSON parser refuses C0/C1 controls (400); the model refuses format characters
    assert status in (400, 422) and res["error"]["field"] == "vm_id", res
    assert "control character" in res["error"]["message"]
