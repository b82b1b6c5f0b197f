"""Admission: a pending replication job starts only when its replicas fit on the OMA VM.

Each job needs one attached volume per disk of its VM on the OMA VM of its CloudStack target.
The room on an OMA VM is ``OMA_ATTACH_BUDGET`` less the data volumes that are not our replicas
("foreign", read from CloudStack at most every :data:`FOREIGN_TTL` seconds) less what the
started syncs and active workflows hold. Idle replicas do not count: a starting sync detaches
them when it needs their room (:mod:`oma.workflows.replicas`).

Jobs are admitted oldest first per OMA VM: when the oldest waiting job does not fit, the younger
ones wait behind it (a big VM is never starved by a stream of small ones) and every waiting job
shows why in ``wait_reason``; only a job whose replicas its VM's active workflow (a failover)
already holds on the OMA VM goes ahead, since it needs no more room. A job whose VM has more
disks than the budget can ever hold fails at once with a clear error. The whole decision runs
in one write transaction that first locks the target rows, so two workers never give away the
same room.

Concurrency caps (:class:`Caps`, 0 = no limit) are decided here too, before the room: at most
``OMA_MAX_JOBS`` admitted jobs in all, ``OMA_MAX_JOBS_PER_VMA`` per VMA,
``OMA_MAX_JOBS_PER_HOST`` per ESXi host and ``OMA_MAX_JOBS_PER_DATASTORE`` per datastore of
the VM's source disks (both from discovery: the context's ``spec``), and a group's
``max_concurrent`` per machine group. An admitted job is one past ``pending`` or holding a
workflow; a job over a cap waits with the cap named (``waiting: group wave-1 allows 3
concurrent jobs, 3 running``) and does not hold up other jobs on the OMA VM. Jobs of higher
priority groups are considered first (VMs in no group: priority 0), oldest first within a
priority.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peewee import fn

from migration_common import get_logger, utcnow

from ..database.db import is_sqlite
from ..database.models import (
    CloudStackTarget,
    JobStatus,
    MachineGroup,
    ReplicationJob,
    ReplicaVolume,
    VmaAppliance,
    VmContext,
    VmDisk,
    Workflow,
)
from ..database.repos.groups import groups_of
from ..database.repos.jobs import finish_job
from ..workflows.replicas import ADMITTED, ON_OMA
from . import _queries as q

log = get_logger(__name__)

FOREIGN_TTL = 30.0
"""Seconds a count of the OMA VM's other data volumes is reused before CloudStack is asked again."""


@dataclass(frozen=True)
class Caps:
    """Most admitted jobs at once: in all, per VMA, per ESXi host, per datastore (0: no limit)."""

    total: int = 0
    per_vma: int = 0
    per_host: int = 0
    per_datastore: int = 0

    @classmethod
    def from_config(cls, config: Any) -> Caps:
        """The caps of an :class:`oma.config.OmaConfig`."""
        return cls(
            total=config.max_jobs,
            per_vma=config.max_jobs_per_vma,
            per_host=config.max_jobs_per_host,
            per_datastore=config.max_jobs_per_datastore,
        )


class _Load:
    """Admitted jobs per cap scope, and the scopes of each VM (one admission pass)."""

    def __init__(self, caps: Caps, context_ids: set[str]) -> None:
        self.caps = caps
        rows = VmContext.select(VmContext.id, VmContext.spec).where(
            VmContext.id.in_(list(context_ids))
        )
        self.spec = {c.id: c.spec or {} for c in rows} if context_ids else {}
        self.groups: dict[str, MachineGroup] = groups_of(context_ids)
        self.group_rows = {g.id: g for g in self.groups.values()}
        self.vma_names = {v.id: v.name for v in VmaAppliance.select()}
        self.running: Counter[tuple[str, str]] = Counter()

    def scopes(self, job: ReplicationJob) -> list[tuple[str, str]]:
        """The cap scopes a job of this VM counts in."""
        spec = self.spec.get(job.context_id, {})
        found = [("total", "")]
        if job.vma_id:
            found.append(("vma", job.vma_id))
        group = self.groups.get(job.context_id)
        if group is not None:
            found.append(("group", group.id))
        if spec.get("host"):
            found.append(("host", str(spec["host"])))
        stores = {d.get("datastore") for d in spec.get("disks") or [] if isinstance(d, dict)}
        found.extend(("datastore", str(ds)) for ds in sorted(s for s in stores if s))
        return found

    def limit(self, scope: tuple[str, str]) -> int:
        kind, key = scope
        if kind == "group":
            return self.group_rows[key].max_concurrent
        return {
            "total": self.caps.total,
            "vma": self.caps.per_vma,
            "host": self.caps.per_host,
            "datastore": self.caps.per_datastore,
        }[kind]

    def priority(self, job: ReplicationJob) -> int:
        group = self.groups.get(job.context_id)
        return group.priority if group is not None else 0

    def full(self, job: ReplicationJob) -> str | None:
        """Why the job must wait for a cap (None when every cap has room)."""
        for scope in self.scopes(job):
            cap = self.limit(scope)
            n = self.running[scope]
            if cap and n >= cap:
                return f"waiting: {self.describe(scope)} allows {cap} concurrent jobs, {n} running"
        return None

    def describe(self, scope: tuple[str, str]) -> str:
        kind, key = scope
        if kind == "group":
            return f"group {self.group_rows[key].name}"
        return {
            "total": "OMA_MAX_JOBS",
            "vma": f"VMA {self.vma_names.get(key, key)} (OMA_MAX_JOBS_PER_VMA)",
            "host": f"ESXi host {key} (OMA_MAX_JOBS_PER_HOST)",
            "datastore": f"datastore {key} (OMA_MAX_JOBS_PER_DATASTORE)",
        }[kind]

    def add(self, job: ReplicationJob) -> None:
        for scope in self.scopes(job):
            self.running[scope] += 1


class Admission:
    """Decides which pending jobs start (one instance per worker; keeps the foreign cache)."""

    def __init__(
        self,
        budget: int,
        foreign_for: Callable[[CloudStackTarget], int],
        clock: Callable[[], float] = time.monotonic,
        caps: Caps | None = None,
    ) -> None:
        self.budget = budget
        self.foreign_for = foreign_for
        self.clock = clock
        self.caps = caps or Caps()
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
            admitted_jobs = _admitted()
            held, own = _held(targets, default, admitted_jobs)
            load = _Load(
                self.caps, {j.context_id for j in pending} | {j.context_id for j in admitted_jobs}
            )
            for running in admitted_jobs:
                load.add(running)
            pending.sort(key=lambda j: -load.priority(j))  # stable: oldest first per priority
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
                capped = load.full(job)
                if capped:
                    _wait(job, capped)
                    continue
                # what this VM's own active workflow (a failover waiting for its final sync)
                # holds is part of what the job needs, not more
                in_use = held[vm] - own.get(job.context_id, 0)
                # a job whose replicas its VM's workflow already holds on the OMA VM takes no
                # room from the job waiting for it: it goes ahead (else failovers holding their
                # replicas would wait behind a job that waits for those very replicas)
                if vm in blocked and own.get(job.context_id, 0) < need:
                    _wait(
                        job, f"queued behind job {blocked[vm]}, which waits for room on the OMA VM"
                    )
                    continue
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
                load.add(job)
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


def _admitted() -> list[ReplicationJob]:
    """Jobs that hold their admission: past pending, or pending with a workflow."""
    return list(
        ReplicationJob.select(ReplicationJob.id, ReplicationJob.context, ReplicationJob.vma).where(
            (ReplicationJob.status.in_(ADMITTED))
            | (
                (ReplicationJob.status == JobStatus.PENDING.value)
                & fn.EXISTS(Workflow.select(Workflow.id).where(Workflow.job == ReplicationJob.id))
            )
        )
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
    targets: dict[str, CloudStackTarget], default: str | None, admitted: list[ReplicationJob]
) -> tuple[Counter[str], dict[str, int]]:
    """Per OMA VM: volumes held by admitted jobs (all their disks) and active workflows (the
    replicas they have on the OMA now); and what each busy context holds."""
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
