"""Verification end to end through the real OMA (serve + worker), VMA, migratekit, qemu-nbd,
vcsim and the CloudStack simulator: a per-VM default asks for it, a replica that does not read
back its source fails the job as ``verify_mismatch``, a verified sync stores digests equal to
the sha256 of the source disks (computed here independently), ``oma job`` shows them, and the
live failover's final sync verifies by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labtest.labvm import lab_disk_sha256
from labtest.nbd import qemu_img

pytestmark = pytest.mark.slow
MiB = 1 << 20
CHUNK = 64 * 1024


def _hole(image: str, size: int) -> int:
    """Offset of a 64 KiB stretch the source image does not allocate (reads as zeroes)."""
    out = qemu_img("map", "--output=json", image)
    for extent in json.loads(out):
        start = -(-extent["start"] // CHUNK) * CHUNK
        if not extent["data"] and start + CHUNK <= min(extent["start"] + extent["length"], size):
            return start
    raise AssertionError(f"{image} has no unallocated 64 KiB")


def _backing(lab, key: str) -> Path:
    return lab.sim.state_dir / "volumes" / f"{lab.volumes()[key]['id']}.img"


def _oma_job(lab, job_id: str) -> str:
    env = {**os.environ, **lab.oma.client_env}
    done = subprocess.run(
        [sys.executable, "-m", "oma", "job", job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_verification_through_the_whole_stack(throttled_lab) -> None:
    lab = throttled_lab
    lab.register()
    ctx = lab.ok(
        "PATCH", f"vm-contexts/{lab.context_id}", {"replication_defaults": {"verify": True}}
    )
    assert ctx["replication_defaults"] == {"verify": True}
    disk0 = lab.vm["disks"][0]
    key0, size0 = str(disk0["key"]), int(disk0["capacity_bytes"])

    # 1. the first full copy goes to fresh volumes, which the copy trusts to read as zeroes and
    # so skips the source's holes; old data put into the replica where the source has a hole
    # (while the slow link keeps the copy running) is found by the verification
    first = lab.replicate()
    assert lab.job(first)["verify"] is True  # the VM's default
    lab.wait_copying(first)
    hole = _hole(lab.vm["images"][key0], size0)
    with open(_backing(lab, key0), "r+b") as fh:
        fh.seek(hole)
        fh.write(b"\xee" * CHUNK)
        fh.flush()
        os.fsync(fh.fileno())
    lab.link.rate = None
    failed = lab.wait_job(first)
    assert failed["status"] == "failed", failed
    assert failed["error_class"] == "verify_mismatch", failed
    assert failed["verify"] is True and failed["verified"] is False
    disks = {d["disk_key"]: d for d in failed["disks"]}
    source0 = lab_disk_sha256(lab.vm["images"][key0], size=size0)
    assert disks[key0]["verified"] is False
    assert disks[key0]["source_sha256"] == source0
    assert (
        disks[key0]["target_sha256"]
        == lab_disk_sha256(_backing(lab, key0), "raw", size=size0)
        != source0
    )
    assert failed["error_message"] == (
        f"verification failed on disk {key0}: the replica reads back sha256 "
        f"{disks[key0]['target_sha256']}, the source holds sha256 {source0}"
    )
    shown = _oma_job(lab, first)
    assert "verification: MISMATCH" in shown
    assert f"replica sha256={disks[key0]['target_sha256']}" in shown
    assert f"error: verify_mismatch: verification failed on disk {key0}" in shown

    # 2. a full copy onto the same volumes writes every byte: verified, digests stored
    second = lab.wait_job(lab.replicate("full"))
    assert second["status"] == "completed", second
    assert second["verify"] is True and second["verified"] is True
    for d in second["disks"]:
        size = next(
            int(x["capacity_bytes"]) for x in lab.vm["disks"] if str(x["key"]) == d["disk_key"]
        )
        source = lab_disk_sha256(lab.vm["images"][d["disk_key"]], size=size)
        assert d["verified"] is True, d
        assert d["source_sha256"] == d["target_sha256"] == source
    lab.assert_replicas_equal()
    assert lab.db(
        "SELECT COUNT(*) FROM job_disks WHERE job_id = ? AND verified = 1", second["id"]
    ) == [(len(lab.vm["disks"]),)]
    shown = _oma_job(lab, second["id"])
    assert "verification: verified" in shown
    assert f"verified sha256={source0}" in shown

    # 3. the live failover's final sync verifies without being asked
    lab.write(0, 5 * MiB, CHUNK, seed=9)
    done = lab.wait_failover(lab.start_failover()["id"])
    lab.assert_failed_over(done)
    final = lab.job(done["final_sync_job_id"])
    assert final["sync_type"] == "incremental" and final["bytes_done"] == CHUNK, final
    assert final["verify"] is True and final["verified"] is True, final
    assert done["params"]["verify_final_sync"] is True
