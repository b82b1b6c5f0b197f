"""The step engine for failover and rollback: waiting steps and no automatic unwinding.

:class:`oma.workflows.engine.WorkflowEngine` runs a workflow's steps to the end in one go and
unwinds on failure. A live failover needs two things more:

- a step may *wait* (the final sync waits for a replication job through the database): it
  raises :class:`StepWaiting`; the step stays ``running`` with its recorded data, the lease
  is released, and the next runner tick (of any worker) runs the step again. The worker is
  never blocked while a job copies;
- a failed step leaves the workflow ``failed`` where it stopped — nothing is undone
  automatically: the operator retries (the failed step and the ones after it run again) or
  asks for a rollback (a separate workflow, :mod:`oma.workflows.failover_rollback`).

:class:`FailoverRunner` is the workflow-runner tick for these kinds; ``oma worker`` calls it
after the replication runner's tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from migration_common import get_logger

from ..database.db import database
from ..database.models import StepStatus, Workflow, WorkflowStep
from .engine import ACTIVE, Definition, Step, StepContext, WorkflowEngine

log = get_logger(__name__)

WAITING_KEY = "_waiting"


class StepWaiting(Exception):
    """Raised by a step that is not finished yet; it runs again on a later tick."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def ordered_definition(
    kind: str,
    order: Iterable[str],
    runs: dict[str, Callable[[StepContext], dict[str, Any] | None]],
    on_failure: Callable[[StepContext, BaseException], None],
) -> Definition:
    """A definition of ``kind`` running ``runs[name]`` for each step name in ``order``."""
    return Definition(kind, [Step(name, runs[name]) for name in order], on_failure=on_failure)


class ResumableEngine(WorkflowEngine):
    """A :class:`WorkflowEngine` whose steps may wait and whose failures are not unwound."""

    def run(self, wf: Workflow, definition: Definition, ctx: StepContext | None = None) -> str:
        """Run or resume ``wf``; returns ``done``, ``failed`` or ``waiting``."""
        ctx = ctx or StepContext(self, wf)
        rows = {r.name: r for r in WorkflowStep.select().where(WorkflowStep.workflow == wf.id)}
        for step in definition.steps:
            row = self._step_row(wf, rows, step)
            if row.status == StepStatus.DONE.value:
                ctx.data[step.name] = dict(row.data or {})
                continue
            ctx.step, ctx._row = step.name, row
            data = dict(row.data or {})
            ctx.data[step.name] = data
            self.renew(wf)
            waiting = row.status == StepStatus.RUNNING.value and data.get(WAITING_KEY)
            if not waiting:  # a fresh start, a retry, or a re-run after a crash
                self._set_step(
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
                self._finish(wf, "failed", error=f"{step.name}: {exc}")
                if definition.on_failure is not None:
                    definition.on_failure(ctx, exc)
                return "failed"
            final = {**(row.data or {}), **result}
            final.pop(WAITING_KEY, None)
            ctx.data[step.name] = final
            self._set_step(row, status=StepStatus.DONE.value, data=final, finished_at=self.clock())
        ctx.step, ctx._row = None, None
        if definition.on_success is not None:
            definition.on_success(ctx)
        self._finish(wf, "done")
        return "done"

    def _release(self, wf: Workflow) -> None:
        """Give the lease back so the next tick (of any worker) re-checks the waiting step."""
        (
            Workflow.update(lease_until=None, updated_at=self.clock())
            .where(Workflow.id == wf.id, Workflow.claimed_by == self.worker_id)
            .execute()
        )


class FailoverRunner:
    """Claims and runs failover and rollback workflows, each at most once per tick."""

    def __init__(self, engine: ResumableEngine, definitions: Iterable[Definition]) -> None:
        self.engine = engine
        self.definitions = {d.kind: d for d in definitions}

    def candidates(self) -> list[str]:
        """Ids of runnable workflows of our kinds, oldest first."""
        now = self.engine.clock()
        query = (
            Workflow.select(Workflow.id)
            .where(
                Workflow.kind.in_(list(self.definitions)),
                Workflow.status.in_(ACTIVE),
                (Workflow.lease_until.is_null())
                | (Workflow.lease_until < now)
                | (Workflow.claimed_by == self.engine.worker_id),
            )
            .order_by(Workflow.created_at)
            .limit(50)
        )
        return [w.id for w in query]

    def tick(self) -> dict[str, int]:
        """One pass over the runnable workflows; returns counts by outcome."""
        counts: dict[str, int] = {"done": 0, "failed": 0, "waiting": 0}
        with database.connection_context():
            for wf_id in self.candidates():
                wf = self.engine.claim(self.definitions, workflow_id=wf_id)
                if wf is None:
                    continue
                try:
                    outcome = self.engine.run(wf, self.definitions[wf.kind])
                except Exception:  # the engine records step failures; this guards bugs
                    log.exception("failover workflow crashed", workflow_id=wf.id)
                    continue
                counts[outcome] = counts.get(outcome, 0) + 1
                if outcome != "waiting":
                    log.info("failover workflow finished", workflow_id=wf.id, outcome=outcome)
        return counts
