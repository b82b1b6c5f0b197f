"""Admission: a pending replication job starts only when its replicas fit on the OMA VM.

Each job needs one attached volume per disk of its VM on the OMA VM of its CloudStack target.
The room on an OMA VM is ``OMA_ATTACH_BUDGET`` less the data volumes that are not our replicas
("foreign", read from CloudStack at most every :data:`FOREIGN_TTL` seconds) less what the
started syncs and active workflows hold. Idle replicas do not count: a starting sync detaches
them when it needs their room (:mod:`oma.workflows.replicas`).

Jobs are admitted oldest first per OMA VM: when the oldest waiting job does not fit, the younger
ones wait behind it (a big VM is never starved by a stream of small ones) and every waiting job
shows why in ``wait_reason``. A job whose VM has more disks than the budget can ever hold fails
at once with a clear error. The whole decision runs in one write transaction that first locks
the target rows, so two workers never give away the same room.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from peewee import fn

from migration_common import get_logger, utcnow

from ..database.db import is_sqlite
from ..database.models import (
    CloudStackTarget,
    JobStatus,
    ReplicationJob,
    ReplicaVolume,
    VmContext,
    VmDisk,
    Workflow,
)
from ..database.repos.jobs import finish_job
from ..workflows.replicas import ADMITTED, ON_OMA
from . import _queries as q

log = get_logger(__name__)

FOREIGN_TTL = 30.0
"""Seconds a count of the OMA VM's other data volumes is reused before CloudStack is asked again."""


class Admission:
    """Decides which pending jobs start (one instance per worker; keeps the foreign cache)."""

    def __init__(
        self,
        budget: int,
        foreign_for: Callable[[CloudStackTarget], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.foreign_for = foreign_for
        self.clock = clock
        self._foreign: dict[str, tuple[float, int]] = {}

    def foreign(self, target: CloudStackTarget) -> int:
        """The target OMA VM's data volumes that are not replicas (cached; 0 when unknown)."""
        cached = self._foreign.get(target.id)
        if cached is not None and self.clock() - cached[0] < FOREIGN_TTL:
            return cached[1]
        try:
            count = int(self.foreign_for(target))
        except Exception as exc:  # CloudStack down: decide with what we know
            log.warning("cannot count the OMA VM's volumes", target_id=target.id, error=str(exc))
            count = cached[1] if cached else 0
        self._foreign[target.id] = (self.clock(), count)
        return count

    def admit(self, create: Callable[[ReplicationJob], None], limit: int = 200) -> int:
        """Start (``create``) every pending job that fits; record why the others wait."""
        pending = _pending(limit)
        if not pending:
            return 0
        targets = {t.id: t for t in CloudStackTarget.select().order_by(CloudStackTarget.id)}
        default = _default_target(targets)
        foreign = {tid: self.foreign(t) for tid, t in targets.items()}
        admitted = 0
        with q.write_transaction():
            if not is_sqlite() and targets:
                CloudStackTarget.select(CloudStackTarget.id).where(
                    CloudStackTarget.id.in_(list(targets))
                ).order_by(CloudStackTarget.id).for_update().execute()
            pending = _pending(limit)  # again, under the lock
            contexts = _contexts_of(pending)
            held, own = _held(targets, default)
            blocked: dict[str, str] = {}  # oma vm → id of the oldest job waiting for it
            for job in pending:
                ctx = contexts.get(job.context_id)
                tid = (ctx.target_id if ctx and ctx.target_id in targets else None) or default
                target = targets.get(tid) if tid else None
                if target is None:  # the workflow reports the missing target
                    create(job)
                    admitted += 1
                    continue
                vm = target.oma_vm_id
                need = _disk_count(job.context_id)
                room = self.budget - foreign[target.id]
                if need > room:
                    _too_big(job, ctx, need, self.budget, foreign[target.id])
                    continue
                if vm in blocked:
                    _wait(
                        job, f"queued behind job {blocked[vm]}, which waits for room on the OMA VM"
                    )
                    continue
                # what this VM's own active workflow (a failover waiting for its final sync)
                # holds is part of what the job needs, not more
                in_use = held[vm] - own.get(job.context_id, 0)
                if in_use + need > room:
                    blocked[vm] = job.id
                    _wait(
                        job,
                        f"waiting for room on the OMA VM {vm}: {in_use} of {room} attachable "
                        f"volumes are held by running syncs and failovers, this VM needs {need} "
                        f"(OMA_ATTACH_BUDGET={self.budget}"
                        + (
                            f", {foreign[target.id]} other volumes attached"
                            if foreign[target.id]
                            else ""
                        )
                        + ")",
                    )
                    continue
                held[vm] = in_use + need
                own[job.context_id] = need
                create(job)
                admitted += 1
        return admitted


def _pending(limit: int) -> list[ReplicationJob]:
    has_workflow = Workflow.select(Workflow.id).where(Workflow.job == ReplicationJob.id)
    return list(
        ReplicationJob.select()
        .where(
            ReplicationJob.status == JobStatus.PENDING.value,
            ReplicationJob.stop_requested == False,  # noqa: E712
            ~fn.EXISTS(has_workflow),
        )
        .order_by(ReplicationJob.created_at)
        .limit(limit)
    )


def _contexts_of(jobs: list[ReplicationJob]) -> dict[str, VmContext]:
    ids = list({j.context_id for j in jobs})
    return {c.id: c for c in VmContext.select().where(VmContext.id.in_(ids))}


def _default_target(targets: dict[str, CloudStackTarget]) -> str | None:
    rows = sorted(targets.values(), key=lambda t: (not t.is_default, t.created_at))
    return rows[0].id if rows else None


def _disk_count(context_id: str) -> int:
    return VmDisk.select().where(VmDisk.context == context_id).count()


def _held(
    targets: dict[str, CloudStackTarget], default: str | None
) -> tuple[Counter[str], dict[str, int]]:
    """Per OMA VM: volumes held by admitted jobs (all their disks) and active workflows (the
    replicas they have on the OMA now); and what each busy context holds."""
    admitted = ReplicationJob.select(ReplicationJob.context).where(
        (ReplicationJob.status.in_(ADMITTED))
        | (
            (ReplicationJob.status == JobStatus.PENDING.value)
            & fn.EXISTS(Workflow.select(Workflow.id).where(Workflow.job == ReplicationJob.id))
        )
    )
    by_jobs = {r.context_id for r in admitted}
    active = Workflow.select(Workflow.context).where(
        Workflow.status.in_(["pending", "running"]), Workflow.context.is_null(False)
    )
    busy = by_jobs | {r.context_id for r in active}
    held: Counter[str] = Counter()
    own: dict[str, int] = {}
    if not busy:
        return held, own
    contexts = VmContext.select(VmContext.id, VmContext.target).where(VmContext.id.in_(list(busy)))
    disks = Counter(
        d.context_id for d in VmDisk.select(VmDisk.context).where(VmDisk.context.in_(list(busy)))
    )
    on_oma: Counter[tuple[str, str]] = Counter(
        (rv.context_id, rv.attached_vm_id)
        for rv in ReplicaVolume.select(ReplicaVolume.context, ReplicaVolume.attached_vm_id).where(
            ReplicaVolume.context.in_(list(busy)), ReplicaVolume.state.in_(ON_OMA)
        )
    )
    for ctx in contexts:
        tid = (ctx.target_id if ctx.target_id in targets else None) or default
        if tid is None:
            continue
        vm = targets[tid].oma_vm_id
        attached = on_oma[(ctx.id, vm)]
        own[ctx.id] = max(disks[ctx.id], attached) if ctx.id in by_jobs else attached
        held[vm] += own[ctx.id]
    return held, own


def _wait(job: ReplicationJob, reason: str) -> None:
    if job.wait_reason != reason:
        ReplicationJob.update(wait_reason=reason, updated_at=utcnow()).where(
            ReplicationJob.id == job.id
        ).execute()
        if job.wait_reason is None:
            q.append_event(job.id, job.context_id, "waiting", reason)


def _too_big(job: ReplicationJob, ctx: Any, need: int, budget: int, foreign: int) -> None:
    name = ctx.name if ctx is not None else job.context_id
    finish_job(
        job.id,
        JobStatus.FAILED,
        error_class="invalid_request",
        message=(
            f"VM {name} has {need} disks but the OMA VM can attach at most {budget - foreign} "
            f"replicas at once (OMA_ATTACH_BUDGET={budget}"
            + (f", {foreign} other volumes attached" if foreign else "")
            + "); raise the budget or free the OMA VM"
        ),
        from_statuses=[JobStatus.PENDING],
    )
