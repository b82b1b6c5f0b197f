"""Reads of workflow rows that several kinds need: a VM's active workflow, a step's data.

Kept apart from the kinds' own modules so that none of them imports another (cleanup must not
run beside a failover; a failover must not start beside a cleanup).
"""

from __future__ import annotations

from typing import Any

from ..database.db import is_sqlite
from ..database.models import VmContext, Workflow, WorkflowStep
from ..errors import NotFoundError
from .kinds import (
    CLEANUP,
    FAILOVER_KINDS,
    FAILOVER_LIVE,
    FAILOVER_ROLLBACK,
    FAILOVER_TEST,
    FAILOVER_TEST_END,
)

ACTIVE = ("pending", "running")
"""Workflow statuses that still run (or wait)."""


def lock_context(context_id: str) -> VmContext:
    """The context row, locked until the transaction ends (NotFoundError when missing)."""
    query = VmContext.select().where(VmContext.id == context_id)
    if not is_sqlite():
        query = query.for_update()
    ctx = query.first()
    if ctx is None:
        raise NotFoundError(f"vm context {context_id} not found", kind="vm context", id=context_id)
    return ctx


def active_workflow(context_id: str) -> Workflow | None:
    """The context's pending or running failover, rollback or cleanup workflow, if any.

    A cleanup (which deletes replica volumes) must not run beside a failover or rollback,
    and no failover starts while one runs.
    """
    return (
        Workflow.select()
        .where(
            Workflow.context == context_id,
            Workflow.kind.in_([*FAILOVER_KINDS, CLEANUP]),
            Workflow.status.in_(ACTIVE),
        )
        .first()
    )


def active_failover(context_id: str) -> Workflow | None:
    """The context's pending or running failover or rollback, if any (cleanups aside)."""
    return (
        Workflow.select()
        .where(
            Workflow.context == context_id,
            Workflow.kind.in_(list(FAILOVER_KINDS)),
            Workflow.status.in_(ACTIVE),
        )
        .first()
    )


def describe(wf: Workflow) -> str:
    """The operator's words for a workflow's kind, for messages."""
    return {
        FAILOVER_LIVE: "failover",
        FAILOVER_ROLLBACK: "rollback",
        FAILOVER_TEST: "test failover",
        FAILOVER_TEST_END: "test failover end",
    }.get(wf.kind, wf.kind)


def steps_of(workflow_id: str) -> list[WorkflowStep]:
    """A workflow's step rows in order."""
    return list(
        WorkflowStep.select()
        .where(WorkflowStep.workflow == workflow_id)
        .order_by(WorkflowStep.position)
    )


def step_data(workflow_id: str, name: str) -> dict[str, Any]:
    """What step ``name`` of a workflow recorded (empty when it has not run)."""
    row = WorkflowStep.get_or_none(WorkflowStep.workflow == workflow_id, WorkflowStep.name == name)
    return dict(row.data or {}) if row is not None else {}


def step_status(workflow_id: str, name: str) -> str | None:
    """Status of step ``name`` of a workflow (None when there is no such step)."""
    row = WorkflowStep.get_or_none(WorkflowStep.workflow == workflow_id, WorkflowStep.name == name)
    return row.status if row is not None else None
