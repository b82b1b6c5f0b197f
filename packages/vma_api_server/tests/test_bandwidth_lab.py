"""A bandwidth limit through the real VMA: set while the job is queued, it paces the copy the
runner's migratekit makes (it reads the job's limit file named in its plan) and shows in the
job's progress."""

from __future__ import annotations

import uuid

import pytest

from labtest.labvm import lab_disk_sha256
from labtest.nbd import qemu_nbd
from migration_common import parse_job_progress

from .test_replication_lab import MiB, _body, _raw, _vm, lab, vma  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_limit_set_while_queued_paces_the_copy(lab, vma, tmp_path) -> None:  # noqa: F811
    vm = _vm(lab, "lab-bandwidth", [6 * MiB], seed=11)
    disk = vm["disks"][0]
    raw = _raw(tmp_path / "target.raw", disk["capacity_bytes"])
    limit = MiB // 2
    with qemu_nbd(raw, fmt="raw") as export:
        job_id = str(uuid.uuid4())
        status, _ = vma.request("POST", "replicate", _body(job_id, vm, {disk["key"]: export.uri}))
        assert status == 202
        status, doc = vma.request("PUT", f"jobs/{job_id}/bandwidth", {"limit_bps": limit})
        assert status == 200 and doc["limit_bps"] == limit
        assert vma.get(f"jobs/{job_id}/bandwidth")["limit_bps"] == limit
        done = vma.wait_job(job_id)
        assert done["status"] == "completed", done
    progress = parse_job_progress(vma.get(f"progress/{job_id}"))
    copied = progress.disks[0]
    assert copied.limit_bps == limit
    assert copied.bytes_done > MiB  # enough data that the limit shows
    assert copied.throughput_bps <= 1.1 * limit, copied
    assert lab_disk_sha256(vm["images"][disk["key"]]) == lab_disk_sha256(raw, "raw")
    status, body = vma.request("PUT", f"jobs/{job_id}/bandwidth", {"limit_bps": 1})
    assert status == 409 and body["error"]["code"] == "job_finished"
