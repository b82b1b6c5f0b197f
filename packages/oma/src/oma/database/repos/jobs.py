"""replication_jobs and job_disks: create, read, finish, stop and delete jobs.

Progress is written by the worker's poller (:func:`oma.services._queries.write_progress`),
status changes during a sync by the replication workflow.

Every way a job ends — the poller, the workflow runner, a stop request, the API — goes
through :func:`finish_job` (the context state rules are in :func:`_context_after`).

The "one active job per VM" rule lives in the database: ``replication_jobs.active_context_id``
is unique and holds the context id while the job is active (NULL once terminal). A second
``create_job`` for the same context fails with the database's IntegrityError, translated to
:class:`oma.errors.ConflictError` — no check-then-insert race, on any of the three databases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from peewee import IntegrityError

from ...errors import ConflictError, InvalidStateError, NotFoundError
from ..db import database, is_sqlite, write_transaction
from ..fields import now
from ..models import (
    ACTIVE_JOB_STATUSES,
    ContextState,
    JobDisk,
    JobEvent,
    JobStatus,
    ReplicationJob,
    RequestedType,
    VmContext,
)
from . import _documents, _select, events
from ._select import Where
from ._util import get_or_raise

ACTIVE = [s.value for s in ACTIVE_JOB_STATUSES]
_now = now  # finish_job's ``now`` parameter shadows the function


def create_job(
    context_id: str,
    *,
    requested_type: RequestedType | str = RequestedType.AUTO,
    vma_id: str | None = None,
    verify: bool | None = None,
) -> ReplicationJob:
    """Insert a pending job for a context; ConflictError when it already has an active job.

    ``vma_id`` defaults to the context's VMA, ``verify`` (the VMA reads every disk back and
    compares sha256) to the context's ``replication_defaults``. The context moves to
    ``replicating`` (one with a test failover in place stays ``failed_over_test``).
    """
    requested = RequestedType(requested_type)
    try:
        with database.atomic():
            # Serialise creators per VM (row lock) so racing inserts meet the unique index one
            # after the other instead of deadlocking on it (InnoDB); SQLite's transactions
            # already hold the database write lock.
            query = VmContext.select().where(VmContext.id == context_id)
            if not is_sqlite():
                query = query.for_update()
            ctx = query.first()
            if ctx is None:
                raise NotFoundError(
                    f"vm context {context_id} not found", kind="vm context", id=context_id
                )
            if verify is None:
                verify = bool((ctx.replication_defaults or {}).get("verify", False))
            job = ReplicationJob.create(
                context=ctx.id,
                vm_name=ctx.name,
                vma=vma_id or ctx.vma_id,
                requested_type=requested.value,
                verify=verify,
                status=JobStatus.PENDING.value,
                active_context_id=ctx.id,
            )
            # a sync beside a test failover keeps the context failed_over_test (the test VM
            # runs on copies of the replicas; ending the test returns it to replicating or
            # ready_for_failover)
            testing = ctx.state == ContextState.FAILED_OVER_TEST.value
            VmContext.update(
                active_job_id=job.id,
                last_job_id=job.id,
                state=ctx.state if testing else ContextState.REPLICATING.value,
                ready_for_failover=False,
                updated_at=now(),
            ).where(VmContext.id == ctx.id).execute()
            events.append_event(
                "job_created",
                f"{requested.value} replication requested"
                + (" with verification" if verify else ""),
                job_id=job.id,
                context_id=ctx.id,
            )
    except IntegrityError as exc:
        active = VmContext.get_or_none(VmContext.id == context_id)
        current = active.active_job_id if active else None
        raise ConflictError(
            f"VM context {context_id} already has an active job"
            + (f" ({current})" if current else ""),
            field="vm_context_id",
        ) from exc
    return job


def get_job(job_id: str) -> ReplicationJob:
    """The job with this id, or NotFoundError."""
    return get_or_raise(ReplicationJob, job_id, "replication job")


def list_jobs(
    document: _documents.Document,
    *,
    status: str | Sequence[str] | None = None,
    context_id: str | None = None,
    vma_id: str | None = None,
    active: bool | None = None,
    since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    after: Sequence[str] | None = None,
) -> _select.Page:
    """A page of jobs rendered as ``document`` (:func:`_documents.page`), newest first (ties
    by id, descending), with the matching count up to :data:`_select.COUNT_CAP`; ``after`` is
    a previous page's :attr:`~_select.Page.after` key. Every filter with this order is served
    by an index (migration 0007)."""
    where = Where()
    if status:
        where.is_in("status", [status] if isinstance(status, str) else list(status))
    if active is not None:
        where.is_in("status", ACTIVE, negate=not active)
    if context_id:
        where.eq("context_id", context_id)
    if vma_id:
        where.eq("vma_id", vma_id)
    if since is not None:
        where.raw("created_at >= {p}", ReplicationJob.created_at.db_value(since))
    return _documents.page(
        ReplicationJob,
        document,
        where,
        order=("created_at", "id"),
        descending=True,
        limit=limit,
        offset=offset,
        after=after,
    )


def list_job_disks(job_id: str) -> list[JobDisk]:
    """A job's per-disk rows ordered by disk key."""
    rows = _select.rows(JobDisk, Where().eq("job_id", job_id))
    return sorted(rows, key=lambda d: (len(d.disk_key), d.disk_key))


def job_disks_by_job(job_ids: Iterable[str]) -> dict[str, list[JobDisk]]:
    """Per-disk rows of many jobs in one query, each list ordered by disk key."""
    ids = list(job_ids)
    out: dict[str, list[JobDisk]] = {i: [] for i in ids}
    if ids:
        for row in JobDisk.select().where(JobDisk.job.in_(ids)):
            out[row.job_id].append(row)
    for rows in out.values():
        rows.sort(key=lambda d: (len(d.disk_key), d.disk_key))
    return out


def finish_job(
    job_id: str,
    status: JobStatus,
    *,
    now: datetime | None = None,
    error_class: str | None = None,
    message: str | None = None,
    from_statuses: Iterable[JobStatus] | None = None,
    change_ids: Mapping[str, str] | None = None,
) -> bool:
    """End a job: the one implementation behind the worker and the API (call inside a
    transaction, e.g. :func:`oma.database.db.write_transaction`).

    Only a job currently in ``from_statuses`` (default: any active status) moves — one
    conditional UPDATE, so two enders never both win; returns whether this call moved it.
    In the same transaction: ``change_ids`` (disk key → change ID, given on completion) go to
    ``vm_disks``; the VM's "one active job" guard is released; the context's state follows
    (:func:`_context_after`); a ``completed``/``failed``/``stopped`` event is appended.
    """
    stamp = now or _now()
    allowed = [s.value for s in (from_statuses or ACTIVE_JOB_STATUSES)]
    job = ReplicationJob.get_or_none(ReplicationJob.id == job_id)
    if job is None or job.status not in allowed:
        return False
    values: dict[Any, Any] = {
        ReplicationJob.status: status.value,
        ReplicationJob.active_context_id: None,
        ReplicationJob.finished_at: stamp,
        ReplicationJob.updated_at: stamp,
        ReplicationJob.claimed_by: None,
        ReplicationJob.lease_until: None,
    }
    if status is JobStatus.COMPLETED:
        values.update(
            {
                ReplicationJob.percent: 100.0,
                ReplicationJob.eta_seconds: None,
                ReplicationJob.throughput_bps: 0.0,
                ReplicationJob.error_class: None,
                ReplicationJob.error_message: None,
            }
        )
    else:
        values[ReplicationJob.error_class] = error_class
        values[ReplicationJob.error_message] = message
    moved = (
        ReplicationJob.update(values)
        .where(ReplicationJob.id == job_id, ReplicationJob.status.in_(allowed))
        .execute()
    )
    if not moved:
        return False
    if status is JobStatus.COMPLETED and change_ids:
        from .contexts import store_change_ids

        store_change_ids(job.context_id, change_ids)
    ctx = VmContext.get_by_id(job.context_id)
    cvalues: dict[Any, Any] = {VmContext.last_job_id: job_id, VmContext.updated_at: stamp}
    if ctx.active_job_id == job_id:
        cvalues[VmContext.active_job_id] = None
    cvalues.update(_context_after(ctx, status, stamp))
    VmContext.update(cvalues).where(VmContext.id == ctx.id).execute()
    if status is JobStatus.COMPLETED:
        text, data = "replication completed", {"change_ids": dict(change_ids or {})}
    elif status is JobStatus.STOPPED:
        text, data = f"replication stopped{': ' + message if message else ''}", None
    else:
        text = f"replication failed ({error_class}): {message}"
        data = {"error_class": error_class} if error_class else None
    JobEvent.create(
        job=job_id, context=job.context_id, kind=status.value, message=text, data=data, at=stamp
    )
    return True


def _context_after(ctx: VmContext, status: JobStatus, stamp: datetime) -> dict[Any, Any]:
    """The context columns that change when one of its jobs ends with ``status``.

    Completed → ``ready_for_failover`` (flag set, ``last_success_at`` stamped). Failed or
    stopped while the context was ``replicating`` → back to ``ready_for_failover`` (flag set)
    when an earlier sync succeeded: its change IDs are still stored, so the next sync — and a
    failover's final sync — start from them and repair what the broken sync half-wrote.
    Without an earlier success: ``failed``, or ``discovered`` when an operator stopped it.
    Any other state (the job was not the reason for it) is left alone. A sync that ends while
    a test failover runs (``failed_over_test``) leaves that state: completed sets the flag and
    stamps ``last_success_at``; failed or stopped changes nothing (the earlier sync's change
    IDs are kept, as above).
    """
    if ctx.state == ContextState.FAILED_OVER_TEST.value:
        if status is JobStatus.COMPLETED:
            return {VmContext.ready_for_failover: True, VmContext.last_success_at: stamp}
        return {}
    if status is JobStatus.COMPLETED:
        return {
            VmContext.state: ContextState.READY_FOR_FAILOVER.value,
            VmContext.ready_for_failover: True,
            VmContext.last_success_at: stamp,
        }
    if ctx.state != ContextState.REPLICATING.value:
        return {}
    if ctx.last_success_at is not None:
        return {
            VmContext.state: ContextState.READY_FOR_FAILOVER.value,
            VmContext.ready_for_failover: True,
        }
    state = ContextState.FAILED if status is JobStatus.FAILED else ContextState.DISCOVERED
    return {VmContext.state: state.value, VmContext.ready_for_failover: False}


def _end(job_id: str, status: JobStatus, **kwargs: Any) -> ReplicationJob:
    """:func:`finish_job` for the API and tools: NotFoundError / InvalidStateError, the row."""
    with write_transaction():
        job = get_job(job_id)
        if JobStatus(job.status).is_terminal or not finish_job(job_id, status, **kwargs):
            raise InvalidStateError(f"job {job_id} is already {get_job(job_id).status}")
    return get_job(job_id)


def complete_job(job_id: str, change_ids: Mapping[str, str] | None = None) -> ReplicationJob:
    """Mark a job completed and store each disk's new change ID (see :func:`finish_job`)."""
    return _end(job_id, JobStatus.COMPLETED, change_ids=change_ids)


def fail_job(job_id: str, error_class: str, error_message: str) -> ReplicationJob:
    """Mark a job failed with a classification (e.g. ``vma_unreachable``) and a message."""
    return _end(job_id, JobStatus.FAILED, error_class=error_class, message=error_message)


def request_stop(job_id: str) -> ReplicationJob:
    """Ask for a job to stop. A pending job (nobody working on it) stops at once; otherwise
    ``stop_requested`` is set and the worker stops the VMA side and calls :func:`finish_job`.
    """
    with write_transaction():
        job = get_job(job_id)
        if JobStatus(job.status).is_terminal:
            raise InvalidStateError(f"job {job_id} is already {job.status}")
        unclaimed = job.status == JobStatus.PENDING.value and job.claimed_by is None
        if unclaimed and finish_job(
            job_id,
            JobStatus.STOPPED,
            message="stopped before it started",
            from_statuses=[JobStatus.PENDING],
        ):
            return get_job(job_id)
        ReplicationJob.update(stop_requested=True, updated_at=_now()).where(
            ReplicationJob.id == job_id
        ).execute()
        events.append_event(
            "stop_requested", "stop requested", job_id=job_id, context_id=job.context_id
        )
    return get_job(job_id)


def stop_job(job_id: str, message: str = "stopped by operator") -> ReplicationJob:
    """Mark a job stopped (once the VMA side is stopped; see :func:`finish_job`)."""
    return _end(job_id, JobStatus.STOPPED, message=message)


def delete_job(job_id: str) -> None:
    """Delete a terminal job with its disk rows and events; InvalidStateError while active."""
    with database.atomic():
        job = get_job(job_id)
        if not JobStatus(job.status).is_terminal:
            raise InvalidStateError(f"job {job_id} is {job.status}; stop it before deleting it")
        VmContext.update(last_job_id=None).where(VmContext.last_job_id == job_id).execute()
        job.delete_instance()
