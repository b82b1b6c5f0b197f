"""Failover records in the database: create, resume, roll back, read (API and worker).

A failover is a ``workflows`` row of kind ``failover_live`` with one ``workflow_steps`` row per
step (:data:`FAILOVER_STEPS`); its ``params`` hold the request and its ``result`` the outcome
(target VM, downtime, final sync bytes). A rollback is a ``workflows`` row of kind
``failover_rollback`` whose ``params.failover_id`` names the failover it undoes. When a
rollback finishes, the failover's status becomes ``rolled_back``.

At most one failover or rollback of a VM context is active at a time: the check runs in a
write transaction that first locks the context row (``SELECT … FOR UPDATE`` on
PostgreSQL/MariaDB; SQLite's ``BEGIN IMMEDIATE`` serialises writers).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from migration_common import utcnow

from ...database.models import ContextState, StepStatus, Workflow, WorkflowStep
from ...errors import ConflictError, InvalidStateError, NotFoundError
from ...services import _queries as q
from ..kinds import FAILOVER_LIVE, FAILOVER_ROLLBACK, FAILOVER_TEST, FAILOVER_TEST_END
from ..records import (
    ACTIVE,
    active_workflow,
    describe,
    lock_context,
)

KIND = FAILOVER_LIVE
ROLLBACK_KIND = FAILOVER_ROLLBACK
FAILOVER_STEPS = [
    "validate",
    "power_off_source",
    "final_sync",
    "detach_replicas",
    "snapshot_replicas",
    "guest_conversion",
    "deploy_target",
    "start_target",
    "finalize",
]
"""The live failover's steps, in order."""
ROLLBACK_STEPS = [
    "remove_target",
    "revert_replicas",
    "power_on_source",
    "delete_snapshots",
    "finish",
]
"""The rollback's steps, in order."""
ROLLED_BACK = "rolled_back"
TEST_KIND = FAILOVER_TEST
TEST_END_KIND = FAILOVER_TEST_END
TEST_STEPS = [
    "validate",
    "snapshot_replicas",
    "create_volumes",
    "deploy_test_vm",
    "start_test_vm",
    "finalize",
]
"""The test failover's steps, in order (:mod:`oma.workflows.failover.test`)."""
TEST_END_STEPS = ["remove_test_vm", "delete_volumes", "delete_snapshots", "finish"]
"""The steps that end a test failover, in order."""
ENDED = "ended"
"""A test failover's status once its end workflow has finished."""


def test_end_pending(context_id: str) -> bool:
    """Whether an end of the context's test failover is pending or running (a live failover
    asked with ``end_test`` waits for it)."""
    return (
        Workflow.select()
        .where(
            Workflow.context == context_id,
            Workflow.kind == TEST_END_KIND,
            Workflow.status.in_(ACTIVE),
        )
        .exists()
    )


def _insert(kind: str, context_id: str, params: dict[str, Any], names: list[str]) -> Workflow:
    wf = Workflow.create(kind=kind, context=context_id, params=params, status="pending")
    WorkflowStep.insert_many(
        [
            {"workflow": wf.id, "name": name, "position": i, "status": "pending"}
            for i, name in enumerate(names)
        ]
    ).execute()
    return wf


def _reopen(wf: Workflow, *, rerun: tuple[str, ...] = ()) -> None:
    """Make a failed workflow runnable again: failed steps (and ``rerun``) become pending."""
    now = utcnow()
    (
        WorkflowStep.update(status=StepStatus.PENDING.value, error=None)
        .where(
            WorkflowStep.workflow == wf.id,
            (WorkflowStep.status == StepStatus.FAILED.value) | (WorkflowStep.name.in_(rerun)),
        )
        .execute()
    )
    (
        Workflow.update(
            status="pending",
            error=None,
            finished_at=None,
            lease_until=None,
            claimed_by=None,
            updated_at=now,
        )
        .where(Workflow.id == wf.id)
        .execute()
    )


def latest_failover(context_id: str) -> Workflow | None:
    """The context's newest live failover (any status), or None."""
    return (
        Workflow.select()
        .where(Workflow.context == context_id, Workflow.kind == KIND)
        .order_by(Workflow.created_at.desc())
        .first()
    )


def start_failover(context_id: str, params: Mapping[str, Any]) -> tuple[Workflow, bool]:
    """Create a live failover for a context, or resume its failed one; (workflow, resumed).

    Raises ConflictError while a failover or rollback of the context is active, and
    InvalidStateError when the context is not ready for failover (or already failed over).
    A failed failover is resumed with the new ``params``: its failed step and ``validate``
    run again, steps already done are kept.
    """
    with q.write_transaction():
        ctx = lock_context(context_id)
        active = active_workflow(context_id)
        if active is not None:
            raise ConflictError(
                f"VM context {context_id} already has an active {describe(active)} ({active.id})",
                field="vm_context_id",
            )
        if ctx.active_job_id:  # a failed failover is not resumed beside a job either
            raise ConflictError(
                f"VM context {context_id} has an active replication job {ctx.active_job_id}; "
                "wait for it or stop it",
                field="vm_context_id",
            )
        last = latest_failover(context_id)
        if last is not None and last.status == "failed":
            last.params = dict(params)
            last.save()
            _reopen(last, rerun=("validate",))
            q.append_event(None, context_id, "failover_resumed", f"live failover {last.id} resumed")
            return Workflow.get_by_id(last.id), True
        if ctx.state == ContextState.FAILED_OVER_LIVE.value:
            raise InvalidStateError(
                f"VM context {context_id} is already failed over; roll back first"
            )
        if ctx.state != ContextState.READY_FOR_FAILOVER.value or not ctx.ready_for_failover:
            raise InvalidStateError(
                f"VM context {context_id} is {ctx.state}, not ready_for_failover; "
                "complete a replication first"
            )
        wf = _insert(KIND, context_id, dict(params), FAILOVER_STEPS)
        q.append_event(None, context_id, "failover_requested", f"live failover {wf.id} requested")
        return wf, False


def retry_failover(failover_id: str) -> Workflow:
    """Resume a failed failover with its stored parameters (InvalidStateError otherwise)."""
    wf = get_failover(failover_id)
    if wf.status != "failed":
        raise InvalidStateError(f"failover {failover_id} is {status_of(wf)}; only a failed one")
    resumed, _ = start_failover(wf.context_id, wf.params or {})
    return resumed


def start_rollback(failover_id: str) -> tuple[Workflow, bool]:
    """Create (or resume a failed) rollback of a failed or completed failover."""
    fo = get_failover(failover_id)
    with q.write_transaction():
        lock_context(fo.context_id)
        fo = Workflow.get_by_id(failover_id)
        if fo.status in ACTIVE:
            raise InvalidStateError(
                f"failover {failover_id} is still running; wait for it to finish or fail"
            )
        if fo.status == ROLLED_BACK:
            raise InvalidStateError(f"failover {failover_id} is already rolled back")
        active = active_workflow(fo.context_id)
        if active is not None:
            raise ConflictError(
                f"VM context {fo.context_id} already has an active {describe(active)} "
                f"({active.id})",
                field="failover_id",
            )
        old = rollback_of(failover_id)
        if old is not None and old.status == "failed":
            _reopen(old)
            q.append_event(None, fo.context_id, "rollback_resumed", f"rollback {old.id} resumed")
            return Workflow.get_by_id(old.id), True
        wf = _insert(ROLLBACK_KIND, fo.context_id, {"failover_id": failover_id}, ROLLBACK_STEPS)
        q.append_event(
            None, fo.context_id, "rollback_requested", f"rollback of failover {failover_id}"
        )
        return wf, False


def get_failover(failover_id: str) -> Workflow:
    """The failover workflow with this id, or NotFoundError."""
    wf = Workflow.get_or_none(Workflow.id == failover_id, Workflow.kind == KIND)
    if wf is None:
        raise NotFoundError(f"failover {failover_id} not found", kind="failover", id=failover_id)
    return wf


def list_failovers(context_id: str) -> list[Workflow]:
    """A context's failovers, newest first."""
    return list(
        Workflow.select()
        .where(Workflow.context == context_id, Workflow.kind == KIND)
        .order_by(Workflow.created_at.desc())
    )


def rollback_of(failover_id: str) -> Workflow | None:
    """The newest rollback of a failover, or None."""
    rows = (
        Workflow.select().where(Workflow.kind == ROLLBACK_KIND).order_by(Workflow.created_at.desc())
    )
    for row in rows:
        if (row.params or {}).get("failover_id") == failover_id:
            return row
    return None


def status_of(wf: Workflow) -> str:
    """The operator's word for a workflow's status (``done`` reads ``completed``)."""
    return "completed" if wf.status == "done" else wf.status


def seconds_between(start: str | datetime | None, end: str | datetime | None) -> float | None:
    """Seconds from ``start`` to ``end`` (RFC 3339 text or datetimes), or None."""
    if not start or not end:
        return None
    a = start if isinstance(start, datetime) else datetime.fromisoformat(start)
    b = end if isinstance(end, datetime) else datetime.fromisoformat(end)
    return round((b - a).total_seconds(), 3)
