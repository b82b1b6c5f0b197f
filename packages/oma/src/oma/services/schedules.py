"""Firing schedules: the database decides which occurrence fires, once, on any number of workers.

Each :meth:`ScheduleFirer.tick` (an APScheduler job of ``oma worker``):

1. for each enabled schedule, computes the latest occurrence of its cron that is due — after
   both its ``active_since`` and the last occurrence it fired — so a worker that was down
   fires a missed occurrence once (the latest), not once per missed tick;
2. fires it: inserts the ``schedule_runs`` row for (schedule, occurrence) and, in the same
   transaction, creates one replication job per target VM and records per VM what happened.
   The row is unique per (schedule, occurrence): a second worker's insert fails and that
   worker skips the occurrence; a crash before the commit leaves no row, so the occurrence
   fires on the next tick;
3. settles earlier runs: a VM deferred because it had an active job (``skip_if_running``
   false) gets its job once that job ended (unless a later run of the schedule took it over),
   and each created job's outcome is copied to its run as it finishes; a run ends when every
   VM has an outcome.

A VM never gets a second active job: the database refuses it, and a schedule records that
as a skip (or a deferral), never as an error. Manual runs (:func:`run_now`) use the time of
the request as their occurrence.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from peewee import IntegrityError

from migration_common import get_logger, utcnow

from ..database.db import database, write_transaction
from ..database.models import (
    ContextState,
    GroupMember,
    JobStatus,
    ReplicationJob,
    RequestedType,
    Schedule,
    ScheduleRun,
    ScheduleRunVm,
    VmContext,
    VmDisk,
)
from ..database.repos import jobs
from ..database.repos import schedules as repo
from ..errors import ConflictError
from ..workflows import records
from . import cron

log = get_logger(__name__)

CREATED, SKIPPED, DEFERRED = "created", "skipped", "deferred"
TERMINAL = tuple(s.value for s in JobStatus if s.is_terminal)


class ScheduleFirer:
    """Fires due schedules; ``clock`` (aware UTC ``datetime``) is injectable for tests."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self._bad: set[tuple[str, str, str]] = set()  # (id, cron, tz) already reported

    def due(self, schedule: Schedule, last: datetime | None, now: datetime) -> datetime | None:
        """The occurrence of ``schedule`` to fire at ``now`` (None when nothing is due)."""
        key = (schedule.id, schedule.cron, schedule.timezone)
        try:
            parsed = cron.parse(schedule.cron, schedule.timezone)
        except ValueError as exc:
            if key not in self._bad:
                self._bad.add(key)
                log.warning("schedule cannot be evaluated", schedule=schedule.name, error=str(exc))
            return None
        after = max(schedule.active_since, last) if last else schedule.active_since
        return parsed.latest_due(after, now)

    def tick(self) -> dict[str, int]:
        """Fire what is due, then settle earlier runs; logs only when something happened."""
        counts = {"fired": 0, "created": 0, "skipped": 0, "settled": 0}
        now = self.clock()
        with database.connection_context():
            schedules = list(Schedule.select().where(Schedule.enabled == True))  # noqa: E712
            last = repo.last_occurrences([s.id for s in schedules])
            for schedule in schedules:
                occurrence = self.due(schedule, last.get(schedule.id), now)
                if occurrence is None:
                    continue
                run = fire(schedule.id, occurrence, now=now)
                if run is None:
                    continue
                counts["fired"] += 1
                counts["created"] += run.created
                counts["skipped"] += run.skipped
            counts["settled"] = settle(now)
        return counts


def run_now(schedule_id: str, now: datetime | None = None) -> ScheduleRun:
    """Fire a schedule at once (its ``trigger`` is ``manual``), enabled or not."""
    moment = now or utcnow()
    run = fire(schedule_id, moment, trigger="manual", now=moment)
    if run is None:  # the same microsecond twice: impossible in practice
        raise ConflictError("a run of this schedule started at this very moment")
    return run


def fire(
    schedule_id: str, occurrence: datetime, *, trigger: str = "schedule", now: datetime
) -> ScheduleRun | None:
    """Record the run of ``occurrence`` and create its jobs; None when it was already fired."""
    with write_transaction():
        schedule = Schedule.get_or_none(Schedule.id == schedule_id)
        if schedule is None:
            return None
        try:
            with database.atomic():
                run = ScheduleRun.create(
                    schedule=schedule.id, occurrence=occurrence, trigger=trigger, started_at=now
                )
        except IntegrityError:  # another worker fired this occurrence
            return None
        targets = _targets(schedule)
        for ctx in targets:
            result, reason, job_id = _start(schedule, ctx)
            ScheduleRunVm.create(
                run=run.id,
                context=ctx.id,
                vm_name=ctx.name,
                result=result,
                reason=reason,
                job_id=job_id,
            )
            if result != SKIPPED:  # this run takes the VM over from older deferred runs
                _supersede(schedule.id, run, ctx.id)
        _recount(run.id, now, eligible=len(targets))
    run = ScheduleRun.get_by_id(run.id)
    log.info(
        "schedule fired",
        schedule=schedule.name,
        occurrence=occurrence.isoformat(),
        trigger=trigger,
        eligible=run.eligible,
        created=run.created,
        skipped=run.skipped,
    )
    return run


def _targets(schedule: Schedule) -> list[VmContext]:
    """The schedule's VMs, by id (the order in which their rows are locked)."""
    if schedule.context_id:
        rows = VmContext.select().where(VmContext.id == schedule.context_id)
    else:
        members = GroupMember.select(GroupMember.context).where(
            GroupMember.group == schedule.group_id
        )
        rows = VmContext.select().where(VmContext.id.in_(members))
    return list(rows.order_by(VmContext.id))


def refusal(ctx: VmContext, requested: str) -> str | None:
    """Why the VM cannot get a job now (a skip reason), apart from an active job."""
    if ctx.state == ContextState.FAILED_OVER_LIVE.value:
        return f"VM is {ctx.state}; roll the failover back before replicating it again"
    if ctx.vma_id is None:
        return "VM has no VMA; register one and add the VM again"
    active = records.active_workflow(ctx.id)
    if active is not None:
        return f"VM has an active {records.describe(active)} ({active.id})"
    if requested == RequestedType.INCREMENTAL.value:
        disks = list(VmDisk.select(VmDisk.change_id).where(VmDisk.context == ctx.id))
        if not disks or any(d.change_id is None for d in disks):
            return "incremental needs a completed earlier sync of every disk"
    return None


def _start(schedule: Schedule, ctx: VmContext) -> tuple[str, str | None, str | None]:
    """(result, reason, job id) of starting one VM's job for a run."""
    ctx = records.lock_context(ctx.id)
    reason = refusal(ctx, schedule.replication_type)
    if reason:
        return SKIPPED, reason, None
    try:
        with database.atomic():
            job = jobs.create_job(ctx.id, requested_type=schedule.replication_type)
    except ConflictError:
        busy = VmContext.get_by_id(ctx.id).active_job_id
        if schedule.skip_if_running:
            return SKIPPED, f"VM has an active job ({busy})", None
        return DEFERRED, f"waits for the VM's active job ({busy}) to end", None
    return CREATED, None, job.id


def _supersede(schedule_id: str, run: ScheduleRun, context_id: str) -> None:
    older = ScheduleRun.select(ScheduleRun.id).where(
        ScheduleRun.schedule == schedule_id, ScheduleRun.id != run.id
    )
    stale = list(
        ScheduleRunVm.select().where(
            ScheduleRunVm.run.in_(older),
            ScheduleRunVm.context == context_id,
            ScheduleRunVm.result == DEFERRED,
        )
    )
    for item in stale:
        ScheduleRunVm.update(
            result=SKIPPED,
            reason=f"superseded by the run of {run.occurrence.isoformat()}",
        ).where(ScheduleRunVm.id == item.id).execute()
        _recount(item.run_id, run.started_at)


def _recount(run_id: str, now: datetime, *, eligible: int | None = None) -> None:
    """Refresh a run's counts; it ends when no VM waits for a job or an outcome."""
    items = list(ScheduleRunVm.select().where(ScheduleRunVm.run == run_id))
    fields: dict[str, Any] = {
        "created": sum(i.result == CREATED for i in items),
        "skipped": sum(i.result == SKIPPED for i in items),
    }
    if eligible is not None:
        fields["eligible"] = eligible
    open_items = [
        i for i in items if i.result == DEFERRED or (i.result == CREATED and i.outcome is None)
    ]
    if not open_items:
        fields["finished_at"] = now
    ScheduleRun.update(**fields).where(
        ScheduleRun.id == run_id, ScheduleRun.finished_at.is_null()
    ).execute()


def settle(now: datetime) -> int:
    """Start deferred VMs whose active job ended, copy finished jobs' outcomes to their
    runs and end the runs with nothing left open; returns how many VM rows changed."""
    changed = 0
    for item in list(ScheduleRunVm.select().where(ScheduleRunVm.result == DEFERRED)):
        with write_transaction():
            item = ScheduleRunVm.get_or_none(
                ScheduleRunVm.id == item.id, ScheduleRunVm.result == DEFERRED
            )
            if item is None:
                continue
            run = ScheduleRun.get_by_id(item.run_id)
            ctx = VmContext.get_or_none(VmContext.id == item.context_id)
            if ctx is None:
                result, reason, job_id = SKIPPED, "the VM was removed", None
            else:
                result, reason, job_id = _start(run.schedule, ctx)
            if result == DEFERRED:
                continue
            ScheduleRunVm.update(result=result, reason=reason, job_id=job_id).where(
                ScheduleRunVm.id == item.id
            ).execute()
            _recount(run.id, now)
            changed += 1
    open_items = list(
        ScheduleRunVm.select().where(
            ScheduleRunVm.result == CREATED, ScheduleRunVm.outcome.is_null()
        )
    )
    if open_items:
        found = {
            j.id: j
            for j in ReplicationJob.select(
                ReplicationJob.id,
                ReplicationJob.status,
                ReplicationJob.error_message,
                ReplicationJob.finished_at,
            ).where(ReplicationJob.id.in_([i.job_id for i in open_items]))
        }
        runs: set[str] = set()
        for item in open_items:
            job = found.get(item.job_id)
            if job is not None and job.status not in TERMINAL:
                continue
            ScheduleRunVm.update(
                outcome=job.status if job else "deleted",
                outcome_message=job.error_message if job else "the job was deleted",
                finished_at=(job.finished_at if job else None) or now,
            ).where(ScheduleRunVm.id == item.id).execute()
            runs.add(item.run_id)
            changed += 1
        for run_id in runs:
            _recount(run_id, now)
    return changed
