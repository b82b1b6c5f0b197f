"""The progress store: per-disk updates from migratekit in, job progress documents out.

An update is validated with :func:`migration_common.parse_disk_update` (a ContractError names
the field), must name a disk of the job (:class:`UnknownDiskError`) and is applied only when
its ``seq`` is greater than the stored one — a single conditional UPDATE, so concurrent or
reordered updates can never move a disk backwards. Updates for a finished job are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from migration_common import DiskProgress, JobProgress, Phase, Status, SyncType, parse_disk_update

from ..errors import JobNotFoundError, UnknownDiskError
from .store import Job, JobDisk, database, parse_time


def hash_token(token: str) -> str:
    """The stored form of a per-job progress token."""
    return hashlib.sha256(token.encode()).hexdigest()


def job_token_matches(job_id: str, token: str) -> bool:
    """True when ``token`` is the progress token issued to ``job_id``'s migratekit."""
    job = Job.get_or_none(Job.job_id == job_id)
    if job is None or not job.token_hash:
        return False
    return hmac.compare_digest(job.token_hash, hash_token(token))


def get_job(job_id: str) -> Job:
    """The job row, or JobNotFoundError."""
    job = Job.get_or_none(Job.job_id == job_id)
    if job is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    return job


def apply_update(job_id: str, data: dict[str, Any] | str | bytes) -> tuple[bool, str]:
    """Apply one disk update; return (accepted, reason). Raises on invalid/unknown input."""
    update = parse_disk_update(data)
    job = get_job(job_id)
    disk = JobDisk.get_or_none((JobDisk.job == job) & (JobDisk.disk_key == update.disk_key))
    if disk is None:
        raise UnknownDiskError(
            f"disk {update.disk_key!r} is not part of job {job_id!r}", field="disk_key"
        )
    if Status(job.status).is_terminal:
        return False, f"job is {job.status}"
    with database.atomic():
        changed = (
            JobDisk.update(seq=update.seq, progress=update.to_json())
            .where((JobDisk.id == disk.id) & (JobDisk.seq < update.seq))
            .execute()
        )
    if not changed:
        return False, "stale seq"
    return True, "applied"


def disk_progress(disk: JobDisk, job: Job) -> DiskProgress:
    """The disk's last update, or a placeholder before migratekit reported anything."""
    if disk.progress:
        return DiskProgress.model_validate_json(disk.progress)
    status = Status(job.status)
    return DiskProgress(
        disk_key=disk.disk_key,
        sync_type=SyncType(job.sync_type),
        phase=Phase.SNAPSHOT,
        status=Status.QUEUED if status is Status.RUNNING else status,
        error=(job.error or "job failed") if status is Status.FAILED else None,
        seq=0,
    )


def job_progress(job: Job, disks: list[JobDisk] | None = None) -> JobProgress:
    """The job's progress document (architecture §3); ``disks`` when already loaded."""
    rows = disks if disks is not None else list(job.disks.order_by(JobDisk.position))
    return _aggregate(job, [disk_progress(d, job) for d in rows])


def jobs_progress(job_ids: list[str]) -> tuple[list[JobProgress], list[str]]:
    """Progress of many jobs with two queries: (documents in request order, unknown ids)."""
    jobs = {j.job_id: j for j in Job.select().where(Job.job_id.in_(job_ids))} if job_ids else {}
    disks: dict[str, list[JobDisk]] = {job_id: [] for job_id in jobs}
    if jobs:
        query = JobDisk.select().where(JobDisk.job.in_(list(jobs))).order_by(JobDisk.position)
        for row in query:
            disks[row.job_id].append(row)
    found = [job_progress(jobs[i], disks[i]) for i in job_ids if i in jobs]
    return found, [i for i in job_ids if i not in jobs]


def _aggregate(job: Job, disks: list[DiskProgress]) -> JobProgress:
    return JobProgress.aggregate(
        job.job_id,
        disks,
        status=Status(job.status),
        sync_type=SyncType(job.sync_type),
        started_at=parse_time(job.started_at),
        error=job.error,
    )


def job_document(job: Job) -> dict[str, Any]:
    """The ``GET /jobs/{id}`` document: the job record with its progress."""
    return {
        "job_id": job.job_id,
        "vm_id": job.vm_id,
        "status": job.status,
        "pid": job.pid,
        "error": job.error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "progress": job_progress(job).to_dict(),
    }
