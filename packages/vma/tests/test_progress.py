"""The progress store on a real SQLite database: seq ordering, finished jobs, placeholders."""

from __future__ import annotations

import pytest

from migration_common import ContractError, Status
from vma.errors import JobNotFoundError, UnknownDiskError
from vma.services.progress import apply_update, job_document, job_progress, jobs_progress
from vma.services.store import Job, JobDisk, database, init_db


@pytest.fixture
def db(tmp_path):
    init_db(tmp_path / "vma.db")
    with database.connection_context():
        for job_id, status in (("a", "running"), ("b", "failed")):
            job = Job.create(
                job_id=job_id,
                vm_id=f"vm-{job_id}",
                request="{}",
                status=status,
                error="boom" if status == "failed" else None,
            )
            for pos, key in enumerate(("2000", "2001")):
                JobDisk.create(job=job, position=pos, disk_key=key, target_uri="nbd://h/e")
        yield


def _done(job_id: str, disk_key: str) -> tuple[int, int]:
    doc = job_progress(Job.get_by_id(job_id))
    disk = next(d for d in doc.disks if d.disk_key == disk_key)
    return disk.bytes_done, disk.seq


def test_updates_apply_in_seq_order_only(db):
    update = {"disk_key": "2000", "bytes_total": 10}
    assert apply_update("a", {**update, "bytes_done": 4, "seq": 3}) == (True, "applied")
    assert _done("a", "2000") == (4, 3)
    # the same seq again and an older one: stored progress stays
    assert apply_update("a", {**update, "bytes_done": 2, "seq": 3}) == (False, "stale seq")
    assert apply_update("a", {**update, "bytes_done": 1, "seq": 2}) == (False, "stale seq")
    assert _done("a", "2000") == (4, 3)
    assert apply_update("a", {**update, "bytes_done": 9, "seq": 4}) == (True, "applied")
    assert _done("a", "2000") == (9, 4)
    doc = job_progress(Job.get_by_id("a"))
    assert [d.bytes_done for d in doc.disks] == [9, 0]
    assert doc.disks[1].status is Status.QUEUED  # no update yet
    assert doc.bytes_total == 10 and doc.percent == 90.0


def test_rejections(db):
    with pytest.raises(JobNotFoundError):
        apply_update("zzz", {"disk_key": "2000"})
    with pytest.raises(UnknownDiskError) as info:
        apply_update("a", {"disk_key": "3000"})
    assert info.value.field == "disk_key"
    with pytest.raises(ContractError) as bad:
        apply_update("a", {"disk_key": "2000", "status": "failed"})
    assert "error must be set" in str(bad.value)
    with pytest.raises(ContractError) as bad:
        apply_update("a", {"disk_key": "2000", "phase": "dancing"})
    assert bad.value.field == "phase"


def test_finished_job_ignores_updates_and_shows_its_error(db):
    assert apply_update("b", {"disk_key": "2000", "seq": 1}) == (False, "job is failed")
    doc = job_document(Job.get_by_id("b"))
    assert doc["status"] == "failed" and doc["error"] == "boom"
    assert {d["status"] for d in doc["progress"]["disks"]} == {"failed"}


def test_batch_keeps_request_order(db):
    found, missing = jobs_progress(["b", "nope", "a"])
    assert [j.job_id for j in found] == ["b", "a"] and missing == ["nope"]
    assert [d.disk_key for d in found[1].disks] == ["2000", "2001"]
