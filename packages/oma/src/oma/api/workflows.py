"""Workflows (replication setup, cleanup, failover, rollback): list and show with their steps;
request a cleanup of a VM's replicas."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, url_for

from ..database.models import ReplicaVolume, VmContext, Workflow, WorkflowStep
from ..database.repos import contexts
from ..database.repos._util import paginate
from .paging import page_json
from .requests import Id, NoBody, PageQuery, body, query
from .serialize import ts

bp = Blueprint("workflows", __name__, url_prefix="/api/v1")


def step(row: WorkflowStep) -> dict[str, Any]:
    """One step of a workflow with its timing and error."""
    data = row.data if isinstance(row.data, dict) else {}
    status = "skipped" if row.status == "done" and data.get("skipped") else row.status
    return {
        "name": row.name,
        "position": row.position,
        "status": status,
        "attempts": row.attempts,
        "started_at": ts(row.started_at),
        "finished_at": ts(row.finished_at),
        "error": row.error,
    }


def workflow(row: Workflow, *, with_steps: bool = True) -> dict[str, Any]:
    """A workflow row (and its steps, in order)."""
    data: dict[str, Any] = {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "vm_context_id": row.context_id,
        "job_id": row.job_id,
        "params": row.params,
        "error": row.error,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
        "finished_at": ts(row.finished_at),
    }
    if with_steps:
        steps = WorkflowStep.select().where(WorkflowStep.workflow == row.id)
        data["steps"] = [step(s) for s in steps.order_by(WorkflowStep.position)]
    return data


class WorkflowsQuery(PageQuery):
    """``GET /workflows``."""

    vm_context_id: Id | None = None
    kind: Id | None = None
    status: Id | None = None


@bp.get("/workflows")
@query(WorkflowsQuery)
def list_workflows() -> Any:
    """Workflows, newest first: ``?vm_context_id=&kind=&status=&limit=&offset=``."""
    q: WorkflowsQuery = g.query
    limit, offset = q.limit, q.offset
    rows_query = Workflow.select()
    for value, column in (
        (q.vm_context_id, Workflow.context),
        (q.kind, Workflow.kind),
        (q.status, Workflow.status),
    ):
        if value:
            rows_query = rows_query.where(column == value)
    found = paginate(rows_query.order_by(Workflow.created_at.desc(), Workflow.id), limit, offset)
    items = [workflow(r, with_steps=False) for r in found.items]
    return jsonify(page_json(found, items, limit=limit, offset=offset))


@bp.get("/workflows/<workflow_id>")
def get_workflow(workflow_id: str) -> Any:
    """One workflow with its steps."""
    from ..database.repos._util import get_or_raise

    return jsonify(workflow(get_or_raise(Workflow, workflow_id, "workflow")))


def has_replicas(context_id: str) -> bool:
    """True when the context still owns replica volumes (not yet deleted in CloudStack)."""
    return (
        ReplicaVolume.select()
        .where(ReplicaVolume.context == context_id, ReplicaVolume.state != "deleted")
        .exists()
    )


def queue_cleanup(ctx: VmContext, *, delete_context: bool) -> Any:
    """Queue the cleanup workflow for ``ctx`` and answer 202 with it; 409 while a job,
    failover or rollback of the VM is active or the VM is failed over."""
    from ..workflows.cleanup import request_cleanup

    wf = request_cleanup(ctx.id, delete_context=delete_context)
    response = jsonify(workflow(wf))
    response.headers["Location"] = url_for("workflows.get_workflow", workflow_id=wf.id)
    return response, 202


@bp.post("/vm-contexts/<context_id>/cleanup")
@body(NoBody)
def cleanup_context(context_id: str) -> Any:
    """Remove the VM's replica volumes and their exports (the worker does it; the next sync is
    full) → 202 with the cleanup workflow; 409 while a job, failover or rollback is active or
    the VM is failed over (roll back first)."""
    return queue_cleanup(contexts.get_context(context_id), delete_context=False)
