"""Database reads and writes the worker needs (poller, workflow runner, recovery).

Every function that changes more than one row runs inside ``database.atomic()``. Ending a job
is :func:`oma.database.repos.jobs.finish_job` (one implementation for the worker and the API).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from peewee import JOIN

from migration_common import JobProgress, Status, utcnow

from ..database.db import database, is_sqlite, write_transaction
from ..database.models import (
    JobDisk,
    JobEvent,
    JobStatus,
    ReplicationJob,
    VmaAppliance,
)


def append_event(
    job_id: str | None,
    context_id: str | None,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Add one line to a job's (and its context's) timeline."""
    JobEvent.create(
        job=job_id, context=context_id, kind=kind, message=message, data=data, at=at or utcnow()
    )


def claim_replicating(worker_id: str, now: datetime, lease_seconds: float) -> int:
    """Lease every replicating job that is free, expired or already ours to ``worker_id``.

    One UPDATE: with several workers on PostgreSQL/MariaDB a job is polled by exactly one of
    them, and a dead worker's jobs are taken over once its lease (a few ticks) has expired.
    """
    with write_transaction():
        return (
            ReplicationJob.update(
                claimed_by=worker_id, lease_until=lease_expiry(now, lease_seconds)
            )
            .where(
                ReplicationJob.status == JobStatus.REPLICATING.value,
                (ReplicationJob.lease_until.is_null())
                | (ReplicationJob.lease_until < now)
                | (ReplicationJob.claimed_by == worker_id),
            )
            .execute()
        )


def replicating_jobs(worker_id: str | None = None) -> list[tuple[ReplicationJob, list[JobDisk]]]:
    """Jobs in ``replicating`` (those leased to ``worker_id`` when given) with their VMA row and
    disk rows (two queries in total)."""
    where = [ReplicationJob.status == JobStatus.REPLICATING.value]
    if worker_id is not None:
        where.append(ReplicationJob.claimed_by == worker_id)
    jobs = list(
        ReplicationJob.select(ReplicationJob, VmaAppliance)
        .join(VmaAppliance, JOIN.LEFT_OUTER)
        .where(*where)
        .order_by(ReplicationJob.created_at)
    )
    if not jobs:
        return []
    by_job: dict[str, list[JobDisk]] = {j.id: [] for j in jobs}
    ids = list(by_job)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for disk in JobDisk.select().where(JobDisk.job.in_(chunk)):
            by_job[disk.job_id].append(disk)
    return [(j, by_job[j.id]) for j in jobs]


def write_progress(
    job: ReplicationJob,
    disks: list[JobDisk],
    progress: JobProgress,
    *,
    now: datetime,
    advanced: bool,
    events: Iterable[tuple[str, str]],
) -> bool:
    """Store a job's progress and its disks' rows (call inside ``atomic()``).

    Returns False when the job left ``replicating`` meanwhile (stopped by an operator):
    nothing is written then. An answer older than the stored rows (a disk's ``seq`` below the
    stored one: answers that arrive out of order) changes nothing either.
    """
    known = {d.disk_key: d for d in disks}
    if any(d.seq < known[d.disk_key].seq for d in progress.disks if d.disk_key in known):
        return True
    # The poller writes ~1,000 jobs per tick: the two hot UPDATEs are plain SQL (building them
    # with peewee costs ten times more than SQLite executing them).
    stamp = _db_time(now)
    params: list[Any] = [
        progress.phase.value,
        progress.percent,
        progress.bytes_total,
        progress.bytes_done,
        progress.throughput_bps,
        progress.eta_seconds,
        progress.sync_type.value,
        stamp,
        stamp,
    ]
    extra = ""
    if advanced:
        extra = ", last_progress_at = {p}"
        params.append(stamp)
    params += [job.id, JobStatus.REPLICATING.value]
    cursor = database.execute_sql(
        _sql(_JOB_UPDATE + extra + " WHERE id = {p} AND status = {p}"), params
    )
    if not cursor.rowcount:
        return False
    for d in progress.disks:
        row = known.get(d.disk_key)
        if row is not None:
            if _disk_changed(row, d):
                database.execute_sql(
                    _sql(_DISK_UPDATE),
                    [
                        d.status.value,
                        d.phase.value,
                        d.sync_type.value,
                        d.bytes_total,
                        d.bytes_done,
                        d.bytes_written,
                        d.bytes_zeroed,
                        d.throughput_bps,
                        d.change_id,
                        d.error,
                        d.seq,
                        d.verified,
                        d.source_sha256,
                        d.target_sha256,
                        stamp,
                        row.id,
                    ],
                )
            continue
        fields = {
            JobDisk.status: d.status.value,
            JobDisk.phase: d.phase.value,
            JobDisk.sync_type: d.sync_type.value,
            JobDisk.bytes_total: d.bytes_total,
            JobDisk.bytes_done: d.bytes_done,
            JobDisk.bytes_written: d.bytes_written,
            JobDisk.bytes_zeroed: d.bytes_zeroed,
            JobDisk.throughput_bps: d.throughput_bps,
            JobDisk.change_id: d.change_id,
            JobDisk.error: d.error,
            JobDisk.seq: d.seq,
            JobDisk.verified: d.verified,
            JobDisk.source_sha256: d.source_sha256,
            JobDisk.target_sha256: d.target_sha256,
            JobDisk.updated_at: now,
        }
        JobDisk.insert({JobDisk.job: job.id, JobDisk.disk_key: d.disk_key, **fields}).execute()
    for kind, message in events:
        append_event(job.id, job.context_id, kind, message, at=now)
    return True


_JOB_UPDATE = (
    "UPDATE replication_jobs SET phase = {p}, percent = {p}, bytes_total = {p}, "
    "bytes_done = {p}, throughput_bps = {p}, eta_seconds = {p}, effective_type = {p}, "
    "vma_seen_at = {p}, updated_at = {p}"
)
_DISK_UPDATE = (
    "UPDATE job_disks SET status = {p}, phase = {p}, sync_type = {p}, bytes_total = {p}, "
    "bytes_done = {p}, bytes_written = {p}, bytes_zeroed = {p}, throughput_bps = {p}, "
    "change_id = {p}, error = {p}, seq = {p}, verified = {p}, source_sha256 = {p}, "
    "target_sha256 = {p}, updated_at = {p} WHERE id = {p}"
)


def _sql(template: str) -> str:
    """``template`` with the bound database's parameter placeholder (``?`` or ``%s``)."""
    return template.replace("{p}", database.param)


def _db_time(value: datetime) -> Any:
    """A timestamp as the UTC-datetime columns store it (naive UTC; text on SQLite)."""
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return str(naive) if is_sqlite() else naive


def _disk_changed(row: JobDisk, d: Any) -> bool:
    return (
        row.seq != d.seq
        or row.status != d.status.value
        or row.bytes_done != d.bytes_done
        or row.phase != d.phase.value
        or row.change_id != d.change_id
        or row.verified != d.verified
    )


def mark_seen(job_id: str, now: datetime) -> None:
    """Record that the VMA reported the job without writing anything else."""
    ReplicationJob.update(vma_seen_at=now).where(ReplicationJob.id == job_id).execute()


def fail_disks(job_id: str, message: str, now: datetime) -> None:
    """Mark the job's disk rows that are neither completed nor failed as failed."""
    (
        JobDisk.update(status=Status.FAILED.value, error=message, updated_at=now)
        .where(
            JobDisk.job == job_id,
            JobDisk.status.not_in([Status.COMPLETED.value, Status.FAILED.value]),
        )
        .execute()
    )


def release_dead_local_leases(hostname: str, *, alive: Any = None) -> list[str]:
    """Expire leases held by workers of this host (``<hostname>-<pid>``) whose PID is gone.

    A worker restarted under its default id (a new PID) then resumes the dead one's work at
    once instead of waiting for the lease to run out. A PID that exists (maybe reused by an
    unrelated process) is left alone: the lease still expires normally.
    """
    import os
    import re

    from ..database.models import Workflow

    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    check = alive or _alive
    pattern = re.compile(rf"^{re.escape(hostname)}-(\d+)$")
    holders = {
        r.claimed_by
        for model in (Workflow, ReplicationJob)
        for r in model.select(model.claimed_by)
        .where(model.claimed_by.is_null(False), model.lease_until.is_null(False))
        .distinct()
    }
    dead = [h for h in holders if (m := pattern.match(h)) and not check(int(m.group(1)))]
    if dead:
        with write_transaction():
            for model in (Workflow, ReplicationJob):
                model.update(lease_until=None).where(model.claimed_by.in_(dead)).execute()
    return dead


def relax_durability() -> None:
    """Inside a transaction that only records progress: on PostgreSQL, commit without waiting
    for the WAL flush (``SET LOCAL synchronous_commit TO OFF``). A crash may lose the last
    fraction of a second of progress numbers — the next tick writes them again — but never a
    status change, change ID or completion (those transactions stay fully durable)."""
    from peewee import PostgresqlDatabase

    if isinstance(database.obj, PostgresqlDatabase):
        database.execute_sql("SET LOCAL synchronous_commit TO OFF")


def lock_rows(query: Any) -> Any:
    """``query`` with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL/MariaDB (SQLite: unchanged)."""
    if is_sqlite():
        return query
    return query.for_update("FOR UPDATE SKIP LOCKED")


def lease_expiry(now: datetime, seconds: float) -> datetime:
    """The end of a lease taken at ``now``."""
    return now + timedelta(seconds=seconds)
