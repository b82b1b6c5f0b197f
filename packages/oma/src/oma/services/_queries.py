"""Database reads and writes the worker needs (poller, workflow runner, recovery).

Every function that changes more than one row runs inside ``database.atomic()``. Ending a job
is :func:`oma.database.repos.jobs.finish_job` (one implementation for the worker and the API).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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
    # Our own leases are renewed by each progress write (write_progress's ``lease_until``):
    # only those past half their time (a job whose VMA had nothing new) are renewed here, so
    # a tick does not rewrite every job row twice.
    renew_before = lease_expiry(now, lease_seconds / 2)
    with write_transaction():
        return (
            ReplicationJob.update(
                claimed_by=worker_id, lease_until=lease_expiry(now, lease_seconds)
            )
            .where(
                ReplicationJob.status == JobStatus.REPLICATING.value,
                (ReplicationJob.lease_until.is_null())
                | (ReplicationJob.lease_until < now)
                | (
                    (ReplicationJob.claimed_by == worker_id)
                    & (ReplicationJob.lease_until < renew_before)
                ),
            )
            .execute()
        )


@dataclass(frozen=True, slots=True)
class ActiveJob:
    """What the poller reads about one ``replicating`` job (plain values, no model)."""

    id: str
    context_id: str
    vma_id: str | None
    status: str
    phase: str | None
    bytes_done: int
    verify: bool
    started_at: datetime | None
    last_progress_at: datetime | None
    vma_seen_at: datetime | None
    disk_keys: frozenset[str]


def replicating_jobs(
    worker_id: str | None = None,
) -> tuple[list[ActiveJob], dict[str, VmaAppliance]]:
    """Jobs in ``replicating`` (those leased to ``worker_id`` when given) with their disk keys,
    and the VMA rows they belong to by id. Only the columns the poller judges by are read, as
    tuples: building 10,000 model instances would cost more than the query."""
    J = ReplicationJob
    where = [J.status == JobStatus.REPLICATING.value]
    if worker_id is not None:
        where.append(J.claimed_by == worker_id)
    rows = list(
        J.select(
            J.id,
            J.context,
            J.vma,
            J.status,
            J.phase,
            J.bytes_done,
            J.verify,
            J.started_at,
            J.last_progress_at,
            J.vma_seen_at,
        )
        .where(*where)
        .order_by(J.created_at)
        .tuples()
    )
    if not rows:
        return [], {}
    keys: dict[str, set[str]] = {row[0]: set() for row in rows}
    ids = list(keys)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for job_id, disk_key in (
            JobDisk.select(JobDisk.job, JobDisk.disk_key).where(JobDisk.job.in_(chunk)).tuples()
        ):
            keys[job_id].add(disk_key)
    jobs = [ActiveJob(*row[:6], bool(row[6]), *row[7:], frozenset(keys[row[0]])) for row in rows]
    wanted = {j.vma_id for j in jobs if j.vma_id is not None}
    vmas = {v.id: v for v in VmaAppliance.select().where(VmaAppliance.id.in_(wanted))}
    return jobs, vmas


@dataclass(frozen=True)
class ProgressWrite:
    """One job's answer to store: the VMA's progress plus what the poller decided about it."""

    job_id: str
    context_id: str | None
    progress: JobProgress
    advanced: bool  # byte/phase progress since the last tick: stamps ``last_progress_at``
    events: tuple[tuple[str, str], ...] = ()  # (kind, message) appended to the timeline


WRITE_CHUNK = 1000
"""Jobs per set-based statement (their disks: one more statement per chunk)."""


def write_progress(
    writes: Sequence[ProgressWrite], *, now: datetime, lease_until: datetime | None = None
) -> set[str]:
    """Store many jobs' progress and their disks' rows in a few set-based statements.

    Call inside ``write_transaction()``. Returns the ids of the jobs still ``replicating``;
    a job that left it meanwhile (stopped by an operator) is not in the result and nothing of
    it is written. Its rows are locked first (``FOR UPDATE`` on PostgreSQL/MariaDB; SQLite's
    write transaction holds the database lock), then the stored disk ``seq`` values are read
    again: a job whose answer is older than its stored rows (a disk's ``seq`` below the stored
    one: answers that arrive out of order) changes nothing. Per chunk of :data:`WRITE_CHUNK`
    jobs: one UPDATE of the job rows, one of the disk rows that changed, one INSERT of the
    events (PostgreSQL ``UPDATE … FROM (VALUES …)``, MariaDB ``UPDATE … JOIN (SELECT … UNION
    ALL VALUES …)``, SQLite ``executemany``). ``lease_until`` (a polling worker's) renews the
    lease of every job row written, in the same UPDATE.
    """
    live: set[str] = set()
    lease = None if lease_until is None else _db_time(lease_until)
    for start in range(0, len(writes), WRITE_CHUNK):
        live |= _write_chunk(writes[start : start + WRITE_CHUNK], _db_time(now), now, lease)
    return live


def _write_chunk(
    writes: Sequence[ProgressWrite], stamp: Any, now: datetime, lease: Any
) -> set[str]:
    ids = [w.job_id for w in writes]
    live = {
        row[0]
        for row in _rows(
            "SELECT id FROM replication_jobs WHERE status = {p} AND id IN ({ids})"
            + ("" if is_sqlite() else " FOR UPDATE"),
            [JobStatus.REPLICATING.value, *ids],
            len(ids),
        )
    }
    if not live:
        return live
    stored: dict[tuple[str, str], tuple[Any, ...]] = {
        (row[1], row[2]): row
        for row in _rows(
            "SELECT id, job_id, disk_key, seq, status, bytes_done, phase, change_id, verified "
            "FROM job_disks WHERE job_id IN ({ids})",
            list(live),
            len(live),
        )
    }
    jobs: list[tuple[Any, ...]] = []
    disks: list[tuple[Any, ...]] = []
    new_disks: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for w in writes:
        if w.job_id not in live:
            continue
        answer = w.progress
        if any(
            d.seq < stored[(w.job_id, d.disk_key)][3]
            for d in answer.disks
            if (w.job_id, d.disk_key) in stored
        ):
            continue  # an older answer than the stored rows: nothing moves backwards
        jobs.append(
            (
                w.job_id,
                answer.phase.value,
                # rounded as the VMA rounds them: 15 significant digits render the same from
                # every database's JSON functions and from Python (the API's lists and details)
                round(answer.percent, 2),
                answer.bytes_total,
                answer.bytes_done,
                round(answer.throughput_bps, 1),
                None if answer.eta_seconds is None else round(answer.eta_seconds, 1),
                answer.sync_type.value,
                stamp if w.advanced else None,
            )
        )
        for d in answer.disks:
            row = stored.get((w.job_id, d.disk_key))
            values = (
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
            )
            if row is None:
                new_disks.append(
                    {
                        **dict(zip((n for n, _ in _DISK_COLUMNS), values, strict=True)),
                        "job": w.job_id,
                        "disk_key": d.disk_key,
                        "updated_at": now,
                    }
                )
            elif row[3:] != (
                d.seq,
                d.status.value,
                d.bytes_done,
                d.phase.value,
                d.change_id,
                _stored_bool(d.verified),
            ):
                disks.append((row[0], *values))
        events += [
            {"job": w.job_id, "context": w.context_id, "kind": kind, "message": text, "at": now}
            for kind, text in w.events
        ]
    constants = {"vma_seen_at": stamp, "updated_at": stamp}
    if lease is not None:
        constants["lease_until"] = lease
    _update_many("replication_jobs", _JOB_COLUMNS, jobs, constants)
    _update_many("job_disks", _DISK_COLUMNS, disks, {"updated_at": stamp})
    for model, rows in ((JobDisk, new_disks), (JobEvent, events)):
        if rows:
            model.insert_many(rows).execute()
    return live


# Columns the poller writes, with their PostgreSQL types (the VALUES list is typed by casts).
_JOB_COLUMNS = (
    ("phase", "varchar"),
    ("percent", "double precision"),
    ("bytes_total", "bigint"),
    ("bytes_done", "bigint"),
    ("throughput_bps", "double precision"),
    ("eta_seconds", "double precision"),
    ("effective_type", "varchar"),
    ("last_progress_at", "timestamp"),  # NULL: unchanged (the job did not advance)
)
_DISK_COLUMNS = (
    ("status", "varchar"),
    ("phase", "varchar"),
    ("sync_type", "varchar"),
    ("bytes_total", "bigint"),
    ("bytes_done", "bigint"),
    ("bytes_written", "bigint"),
    ("bytes_zeroed", "bigint"),
    ("throughput_bps", "double precision"),
    ("change_id", "varchar"),
    ("error", "text"),
    ("seq", "integer"),
    ("verified", "boolean"),
    ("source_sha256", "varchar"),
    ("target_sha256", "varchar"),
)
_KEEP_WHEN_NULL = {"last_progress_at"}


def _update_many(
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: list[tuple[Any, ...]],
    constants: dict[str, Any],
) -> None:
    """Set each row ``(id, *values)`` of ``table`` to its values (and the ``constants``
    columns to their one value) in one statement (SQLite: one ``executemany``)."""
    if not rows:
        return
    names = [name for name, _ in columns]
    stamped = list(constants)
    stamps = list(constants.values())
    if is_sqlite():
        sets = [f"{n} = COALESCE(?, {n})" if n in _KEEP_WHEN_NULL else f"{n} = ?" for n in names]
        sets += [f"{n} = ?" for n in stamped]
        database.cursor().executemany(
            f"UPDATE {table} SET {', '.join(sets)} WHERE id = ?",
            [(*row[1:], *stamps, row[0]) for row in rows],
        )
        return
    sets = [
        f"{n} = COALESCE(v.{n}, t.{n})" if n in _KEEP_WHEN_NULL else f"{n} = v.{n}" for n in names
    ] + [f"{n} = %s" for n in stamped]
    flat = [value for row in rows for value in row]
    if _is_postgresql():
        one = "(%s, " + ", ".join(f"%s::{pg}" for _, pg in columns) + ")"
        sql = (
            f"UPDATE {table} AS t SET {', '.join(sets)} "
            f"FROM (VALUES {', '.join(one for _ in rows)}) AS v(id, {', '.join(names)}) "
            "WHERE t.id = v.id"
        )
        database.execute_sql(sql, stamps + flat)
        return
    # MariaDB/MySQL: join a derived table whose first row names the columns
    head = "SELECT %s AS id, " + ", ".join(f"%s AS {n}" for n in names)
    one = "(" + ", ".join("%s" for _ in range(len(names) + 1)) + ")"
    tail = f" UNION ALL VALUES {', '.join(one for _ in rows[1:])}" if len(rows) > 1 else ""
    sets = [f"t.{s}" for s in sets]
    sql = f"UPDATE {table} AS t JOIN ({head}{tail}) AS v ON t.id = v.id SET {', '.join(sets)}"
    database.execute_sql(sql, flat + stamps)


def _rows(template: str, params: list[Any], count: int) -> list[tuple[Any, ...]]:
    """Rows of ``template`` with ``{ids}`` expanded to ``count`` placeholders."""
    sql = _sql(template.replace("{ids}", ", ".join("{p}" for _ in range(count))))
    return list(database.execute_sql(sql, params).fetchall())


def _is_postgresql() -> bool:
    from peewee import PostgresqlDatabase

    return isinstance(database.obj, PostgresqlDatabase)


def _stored_bool(value: bool | None) -> Any:
    """``value`` as a driver returns it from a boolean column (1/0 on SQLite and MariaDB)."""
    if value is None or _is_postgresql():
        return value
    return int(value)


def _sql(template: str) -> str:
    """``template`` with the bound database's parameter placeholder (``?`` or ``%s``)."""
    return template.replace("{p}", database.param)


def _db_time(value: datetime) -> Any:
    """A timestamp as the UTC-datetime columns store it (naive UTC; text on SQLite)."""
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return str(naive) if is_sqlite() else naive


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
