"""The step engine of every workflow kind: named steps stored in the database, resumable.

A workflow (a ``workflows`` row) is an ordered list of named steps (``workflow_steps`` rows).
A :class:`Step` pairs an idempotent ``run`` with an optional ``compensate``. The engine:

- claims a workflow with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL/MariaDB, a plain
  transaction on SQLite), so two workers never run the same workflow and a dead worker's
  workflow is picked up again once its lease has expired;
- runs the steps in order, skipping those already ``done`` (their stored ``data`` is handed
  to later steps), recording status, attempts, timing and errors per step;
- lets a step *wait*: it raises :class:`StepWaiting` (e.g. a failover waiting for its final
  sync through the database); the step stays ``running`` with its data, the lease is given
  back and a later runner tick (of any worker) runs the step again — no worker is blocked;
- on a step's failure, when the definition unwinds (``unwind=True``, e.g. replication),
  calls ``compensate`` of that step and of every earlier done step in reverse order (each
  marked ``compensated``); a definition with ``unwind=False`` (failover, rollback) stops where
  it failed, for a retry or a rollback. Either way the definition's ``on_failure`` runs, then
  the workflow reads ``failed``.

A step that was ``running`` when its worker died is simply run again: steps are idempotent
(find-or-create, attach-if-not-attached, start-if-not-running).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from migration_common import get_logger, utcnow

from ..database.models import StepStatus, Workflow, WorkflowStep
from ..metrics import observe_step
from ..services import _queries as q

log = get_logger(__name__)

ACTIVE = ("pending", "running")
WAITING_KEY = "_waiting"
"""Key of a waiting step's data that holds why it waits."""


class StepWaiting(Exception):
    """Raised by a step that is not finished yet; it runs again on a later tick."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StepContext:
    """What a running step sees: the workflow row, earlier steps' data, lease renewal."""

    def __init__(self, engine: WorkflowEngine, workflow: Workflow) -> None:
        self.engine = engine
        self.workflow = workflow
        self.params: dict[str, Any] = dict(workflow.params or {})
        self.data: dict[str, dict[str, Any]] = {}
        self.step: str | None = None
        self._row: WorkflowStep | None = None

    def record(self, **values: Any) -> None:
        """Store ``values`` in the running step's data at once (survives the step failing).

        A step records what it created as it goes, so its compensation (or a resumed run)
        knows about resources made before a failure or crash.
        """
        assert self._row is not None, "record() is only valid inside a step"
        data = dict(self._row.data or {})
        data.update(values)
        self._row.data = data
        self._row.save()
        self.data[self._row.name] = data

    def renew_lease(self) -> None:
        """Extend this worker's lease (call during long steps)."""
        self.engine.renew(self.workflow)


@dataclass(frozen=True)
class Step:
    """One named step: ``run(ctx) -> data | None`` (idempotent) and its compensation."""

    name: str
    run: Callable[[StepContext], dict[str, Any] | None]
    compensate: Callable[[StepContext], None] | None = None


@dataclass
class Definition:
    """A workflow kind: its steps, whether a failure unwinds them, what to do when it ends."""

    kind: str
    steps: list[Step]
    on_success: Callable[[StepContext], None] | None = None
    on_failure: Callable[[StepContext, BaseException], None] | None = None
    unwind: bool = True
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [s.name for s in self.steps]


class WorkflowEngine:
    """Creates, claims and runs workflows for one worker (``worker_id``)."""

    def __init__(
        self, worker_id: str, *, lease_seconds: float = 60.0, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.clock = clock

    # -- rows -----------------------------------------------------------------------------

    def create(
        self,
        definition: Definition,
        *,
        context_id: str | None = None,
        job_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> Workflow:
        """Insert a pending workflow and its pending steps (one transaction)."""
        with q.write_transaction():
            wf = Workflow.create(
                kind=definition.kind,
                context=context_id,
                job=job_id,
                params=params or {},
                status="pending",
            )
            WorkflowStep.insert_many(
                [
                    {"workflow": wf.id, "name": name, "position": i, "status": "pending"}
                    for i, name in enumerate(definition.names)
                ]
            ).execute()
        return wf

    def claim(
        self,
        kinds: Iterable[str],
        *,
        workflow_id: str | None = None,
        exclude: Iterable[str] = (),
    ) -> Workflow | None:
        """Lease one runnable workflow of ``kinds`` (pending, or running with an expired lease
        or a lease held by this very worker id after a restart), oldest first, none of
        ``exclude`` (those a tick already ran)."""
        now = self.clock()
        with q.write_transaction():
            query = (
                Workflow.select()
                .where(
                    Workflow.kind.in_(list(kinds)),
                    Workflow.status.in_(ACTIVE),
                    (Workflow.lease_until.is_null())
                    | (Workflow.lease_until < now)
                    | (Workflow.claimed_by == self.worker_id),
                )
                .order_by(Workflow.created_at)
                .limit(1)
            )
            if workflow_id is not None:
                query = query.where(Workflow.id == workflow_id)
            skip = list(exclude)
            if skip:
                query = query.where(Workflow.id.not_in(skip))
            wf = q.lock_rows(query).first()
            if wf is None:
                return None
            until = q.lease_expiry(now, self.lease_seconds)
            got = (
                Workflow.update(
                    claimed_by=self.worker_id, lease_until=until, status="running", updated_at=now
                )
                .where(
                    Workflow.id == wf.id,
                    Workflow.status.in_(ACTIVE),
                    (Workflow.lease_until.is_null())
                    | (Workflow.lease_until < now)
                    | (Workflow.claimed_by == self.worker_id),
                )
                .execute()
            )
            if not got:
                return None
        return Workflow.get_by_id(wf.id)

    def renew(self, wf: Workflow) -> None:
        """Extend the lease on ``wf`` (only while this worker holds it)."""
        now = self.clock()
        (
            Workflow.update(lease_until=q.lease_expiry(now, self.lease_seconds), updated_at=now)
            .where(Workflow.id == wf.id, Workflow.claimed_by == self.worker_id)
            .execute()
        )

    def release_own(self) -> int:
        """Expire leases still held under this worker id (called at start after a crash)."""
        return (
            Workflow.update(lease_until=None)
            .where(Workflow.claimed_by == self.worker_id, Workflow.status.in_(ACTIVE))
            .execute()
        )

    def _set_step(self, row: WorkflowStep, **values: Any) -> None:
        for key, value in values.items():
            setattr(row, key, value)
        row.save()

    def _step_row(self, wf: Workflow, rows: dict[str, WorkflowStep], step: Step) -> WorkflowStep:
        """The step's row; created (``pending``) for a step added after ``wf`` was created."""
        row = rows.get(step.name)
        if row is None:
            row = WorkflowStep.create(
                workflow=wf.id, name=step.name, position=len(rows), status="pending"
            )
            rows[step.name] = row
        return row

    def _fail_step(self, wf: Workflow, row: WorkflowStep, exc: BaseException) -> None:
        """Log a step's failure and record it on the step row."""
        log.warning("workflow step failed", workflow_id=wf.id, step=row.name, error=str(exc))
        self._set_step(
            row,
            status=StepStatus.FAILED.value,
            error=str(exc)[:4000],
            finished_at=self.clock(),
        )
        observe_step(wf.kind, row)

    # -- running --------------------------------------------------------------------------

    def run(self, wf: Workflow, definition: Definition, ctx: StepContext | None = None) -> str:
        """Run (or resume) ``wf``; return ``done``, ``failed`` or ``waiting``."""
        ctx = ctx or StepContext(self, wf)
        rows = {r.name: r for r in WorkflowStep.select().where(WorkflowStep.workflow == wf.id)}
        done: list[Step] = []
        for step in definition.steps:
            row = self._step_row(wf, rows, step)
            if row.status == StepStatus.DONE.value:
                ctx.data[step.name] = dict(row.data or {})
                done.append(step)
                continue
            ctx.step = step.name
            ctx._row = row
            data = dict(row.data or {})  # partial data of an interrupted or waiting run
            ctx.data[step.name] = data
            self.renew(wf)
            if not (row.status == StepStatus.RUNNING.value and data.get(WAITING_KEY)):
                self._set_step(  # a fresh start, a retry, or a re-run after a crash
                    row,
                    status=StepStatus.RUNNING.value,
                    attempts=row.attempts + 1,
                    started_at=self.clock(),
                    finished_at=None,
                    error=None,
                    claimed_by=self.worker_id,
                )
            try:
                result = step.run(ctx) or {}
            except StepWaiting as wait:
                ctx.record(**{WAITING_KEY: wait.reason})
                self._release(wf)
                return "waiting"
            except Exception as exc:
                self._fail_step(wf, row, exc)
                if definition.unwind:
                    self._compensate(ctx, [*done, step], rows)
                ctx.step = step.name
                try:  # e.g. the job is finished before the workflow reads as failed
                    if definition.on_failure is not None:
                        definition.on_failure(ctx, exc)
                finally:
                    self._finish(wf, "failed", error=f"{step.name}: {exc}")
                return "failed"
            final = {**(row.data or {}), **result}
            final.pop(WAITING_KEY, None)
            ctx.data[step.name] = final
            self._set_step(row, status=StepStatus.DONE.value, data=final, finished_at=self.clock())
            observe_step(wf.kind, row)
            done.append(step)
        ctx.step, ctx._row = None, None
        if definition.on_success is not None:
            definition.on_success(ctx)
        self._finish(wf, "done")
        return "done"

    def _release(self, wf: Workflow) -> None:
        """Give the lease back so a later tick (of any worker) re-checks the waiting step."""
        (
            Workflow.update(lease_until=None, updated_at=self.clock())
            .where(Workflow.id == wf.id, Workflow.claimed_by == self.worker_id)
            .execute()
        )

    def _compensate(
        self, ctx: StepContext, steps: list[Step], rows: dict[str, WorkflowStep]
    ) -> None:
        for step in reversed(steps):
            if step.compensate is None:
                continue
            ctx.step = step.name
            try:
                step.compensate(ctx)
            except Exception as exc:  # keep unwinding; the error stays on the step row
                log.warning(
                    "compensation failed",
                    workflow_id=ctx.workflow.id,
                    step=step.name,
                    error=str(exc),
                )
                self._set_step(rows[step.name], error=f"compensation failed: {exc}"[:4000])
                continue
            if rows[step.name].status == StepStatus.DONE.value:  # a failed step stays failed
                self._set_step(rows[step.name], status=StepStatus.COMPENSATED.value)

    def _finish(self, wf: Workflow, status: str, error: str | None = None) -> None:
        now = self.clock()
        (
            Workflow.update(
                status=status, error=error, finished_at=now, updated_at=now, lease_until=None
            )
            .where(Workflow.id == wf.id)
            .execute()
        )
