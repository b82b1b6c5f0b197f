"""Failover records on SQLite, PostgreSQL and MariaDB: one active per VM, resume, rollback."""

from __future__ import annotations

import pytest

from oma.database.models import Workflow, WorkflowStep
from oma.database.repos import contexts, jobs
from oma.errors import ConflictError, InvalidStateError, NotFoundError
from oma.workflows import records
from oma.workflows.cleanup import request_cleanup
from oma.workflows.failover import store

PARAMS = {"type": "live", "network_mappings": {"VM Network": "n1"}, "service_offering_id": "s"}


def _ready_context(vm_id: str = "vm-1") -> str:
    ctx = contexts.create_context(
        vcenter="vc", vm_id=vm_id, name=vm_id, disks=[{"disk_key": "2000", "capacity_bytes": 1}]
    )
    contexts.set_state(ctx.id, "ready_for_failover", ready_for_failover=True)
    return ctx.id


def _fail(wf_id: str, step: str) -> None:
    WorkflowStep.update(status="failed", error="boom").where(
        WorkflowStep.workflow == wf_id, WorkflowStep.name == step
    ).execute()
    WorkflowStep.update(status="done").where(
        WorkflowStep.workflow == wf_id,
        WorkflowStep.position < store.FAILOVER_STEPS.index(step),
    ).execute()
    Workflow.update(status="failed", error=f"{step}: boom").where(Workflow.id == wf_id).execute()


def test_one_failover_per_vm_then_resume_and_rollback(any_db: str) -> None:
    ctx = _ready_context()
    other = _ready_context("vm-2")
    wf, resumed = store.start_failover(ctx, PARAMS)
    assert not resumed and wf.kind == store.KIND and wf.params == PARAMS
    assert [s.name for s in records.steps_of(wf.id)] == store.FAILOVER_STEPS
    with pytest.raises(ConflictError):
        store.start_failover(ctx, PARAMS)
    store.start_failover(other, PARAMS)  # another VM is independent
    with pytest.raises(InvalidStateError):
        store.start_rollback(wf.id)  # still running

    _fail(wf.id, "deploy_target")
    again, resumed = store.start_failover(ctx, {**PARAMS, "vm_name": "x"})
    assert resumed and again.id == wf.id
    assert again.status == "pending" and again.params["vm_name"] == "x"
    with pytest.raises(InvalidStateError):
        store.retry_failover(wf.id)  # it is pending again, nothing to retry
    status = {s.name: s.status for s in records.steps_of(wf.id)}
    assert status["validate"] == "pending" and status["final_sync"] == "done"
    assert status["deploy_target"] == "pending"

    _fail(wf.id, "start_target")
    rb, resumed = store.start_rollback(wf.id)
    assert not resumed and rb.params == {"failover_id": wf.id}
    assert store.rollback_of(wf.id).id == rb.id
    with pytest.raises(ConflictError):
        store.start_failover(ctx, PARAMS)  # a rollback is running
    Workflow.update(status="failed").where(Workflow.id == rb.id).execute()
    rb2, resumed = store.start_rollback(wf.id)
    assert resumed and rb2.id == rb.id and rb2.status == "pending"
    Workflow.update(status=store.ROLLED_BACK).where(Workflow.id == wf.id).execute()
    Workflow.update(status="done").where(Workflow.id == rb.id).execute()
    with pytest.raises(InvalidStateError):
        store.start_rollback(wf.id)
    assert [f.id for f in store.list_failovers(ctx)] == [wf.id]
    assert store.status_of(store.get_failover(wf.id)) == "rolled_back"
    new, resumed = store.start_failover(ctx, PARAMS)  # after a rollback: a fresh failover
    assert not resumed and new.id != wf.id


def test_state_rules(any_db: str) -> None:
    with pytest.raises(NotFoundError):
        store.start_failover("missing", PARAMS)
    with pytest.raises(NotFoundError):
        store.get_failover("missing")
    ctx = contexts.create_context(vcenter="vc", vm_id="vm-3", name="vm-3")
    with pytest.raises(InvalidStateError, match="not ready_for_failover"):
        store.start_failover(ctx.id, PARAMS)
    contexts.set_state(ctx.id, "ready_for_failover", ready_for_failover=True)
    job = jobs.create_job(ctx.id)
    with pytest.raises(ConflictError, match=job.id):
        store.start_failover(ctx.id, PARAMS)
    jobs.stop_job(job.id)
    cleanup = request_cleanup(ctx.id)  # deletes replicas: never beside a failover
    with pytest.raises(ConflictError, match="active cleanup"):
        store.start_failover(ctx.id, PARAMS)
    assert records.active_workflow(ctx.id).id == cleanup.id
    Workflow.update(status="done").where(Workflow.id == cleanup.id).execute()
    contexts.set_state(ctx.id, "failed_over_live")
    with pytest.raises(InvalidStateError, match="already failed over"):
        store.start_failover(ctx.id, PARAMS)


def test_seconds_between() -> None:
    assert store.seconds_between("2026-01-01T00:00:00Z", "2026-01-01T00:01:02.5Z") == 62.5
    assert store.seconds_between(None, "2026-01-01T00:00:00Z") is None
