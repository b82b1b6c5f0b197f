"""Private files of the VMA: its data directory and job directories are 0700, the job database
and the migratekit job log 0600 (the real server runs one small job: vcsim + lab VM → qemu-nbd)."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from labtest.labvm import create_lab_vm
from labtest.nbd import qemu_nbd
from labtest.vcsim import vcsim
from labtest.vma import vma_server

pytestmark = pytest.mark.slow
MiB = 1 << 20


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_dir_database_job_dir_and_job_log_are_private(tmp_path: Path) -> None:
    with vcsim(tmp_path / "lab") as vc:
        vm = create_lab_vm(vc, tmp_path / "images", "lab-modes", [1 * MiB], seed=3)
        disk = vm["disks"][0]
        raw = tmp_path / "target.raw"
        with open(raw, "wb") as fh:
            fh.truncate(disk["capacity_bytes"])
        with (
            qemu_nbd(raw, fmt="raw") as target,
            vma_server(tmp_path, vcenter=vc, lab_dir=tmp_path / "images") as vma,
        ):
            job_id = str(uuid.uuid4())
            body = {
                "job_id": job_id,
                "vm_id": vm["id"],
                "disks": [{"disk_key": disk["key"], "target_uri": target.uri}],
                "options": {"target_is_zero": True},
            }
            assert vma.request("POST", "replicate", body)[0] == 202
            done = vma.wait_job(job_id)
            assert done["status"] == "completed", done
            data = vma.data_dir
            job_dir = data / "jobs" / job_id
            assert _mode(data) == 0o700
            assert _mode(data / "vma.db") == 0o600
            assert _mode(job_dir) == 0o700
            assert (job_dir / "migratekit.log").stat().st_size > 0
            assert _mode(job_dir / "migratekit.log") == 0o600
