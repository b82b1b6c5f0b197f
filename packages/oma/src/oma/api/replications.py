"""Replications: create (202, the worker does the work), list, get, stop, delete."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for

from ..database.models import ContextState, JobStatus, RequestedType, VmContext
from ..database.repos import contexts, jobs
from ..errors import ConflictError
from ..services._queries import write_transaction
from ..workflows import records, resume
from .errors import ApiError, invalid
from .schemas import REPLICATION, body
from .serialize import job
from .targets import refuse_disks_too_large
from .validation import boolean, choice, json_body, no_unknown, page, query_bool, string, vm_id

bp = Blueprint("replications", __name__, url_prefix="/api/v1/replications")


def _resolve_context(data: dict[str, Any]) -> VmContext:
    context_id = string(data, "vm_context_id", required=False)
    if context_id:
        return contexts.get_context(context_id)
    if data.get("vm_id") is None:
        raise invalid("vm_context_id", "is required (or vm_id with vma_id)")
    wanted = vm_id(data["vm_id"], "vm_id")
    vma_id = string(data, "vma_id", required=False)
    row = contexts.find_context(vm_id=wanted, vma_id=vma_id)
    if row is None:
        raise ApiError(
            "not_found", f"VM {wanted} is not managed; add it through discovery first", 404, "vm_id"
        )
    return row


@bp.post("")
@body(REPLICATION)
def create_replication() -> Any:
    """Request a replication: ``{"vm_context_id" | "vm_id" + "vma_id"?, "type":
    "auto|full|incremental", "verify"?}`` → 202 with the job (``verify``: the VMA reads every
    disk back and compares sha256; default: the VM's ``replication_defaults``); 409 when the VM
    has an active job or an active failover, rollback (whose own final sync creates its job
    directly), cleanup or test failover start or end, 409 when it is failed over live, and 409
    ``disk_too_large`` when the target's disk offering cannot carry one of its disks. A VM
    whose test failover runs (``failed_over_test``) replicates as usual: the test VM runs on
    copies of the replicas. ``vm_id`` is taken in canonical form (a UUID in lower case)."""
    data = json_body()
    no_unknown(data, ("vm_context_id", "vm_id", "vma_id", "type", "verify"))
    kind = choice(data, "type", RequestedType, RequestedType.AUTO)
    verify = boolean(data, "verify") if data.get("verify") is not None else None
    ctx = _resolve_context(data)
    # a test failover runs on copies of the replicas: syncs go on beside it
    if ctx.state == ContextState.FAILED_OVER_LIVE.value:
        raise ApiError(
            "invalid_state",
            f"VM {ctx.name} is {ctx.state}; roll the failover back before replicating it again",
            409,
        )
    if ctx.vma_id is None:
        raise invalid(
            "vma_id", f"VM context {ctx.id} has no VMA; register one and add the VM again"
        )
    refuse_disks_too_large(ctx, "vm_context_id" if "vm_context_id" in data else "vm_id")
    if kind is RequestedType.INCREMENTAL:
        disks = contexts.list_disks(ctx.id)
        if not disks or any(d.change_id is None for d in disks):
            raise invalid(
                "type", "incremental needs a completed earlier sync of every disk; use auto or full"
            )
    with write_transaction():
        # the context lock orders this with a failover's start (which refuses an active job)
        records.lock_context(ctx.id)
        active = records.active_workflow(ctx.id)  # failover, rollback or cleanup
        if active is not None:
            raise ConflictError(
                f"VM {ctx.name} has an active {records.describe(active)} ({active.id}); "
                "replicate it once that has finished",
                field="vm_context_id",
            )
        row = jobs.create_job(ctx.id, requested_type=kind, verify=verify)
    response = jsonify(job(row, [], context_name=ctx.name))
    response.headers["Location"] = url_for(".get_replication", job_id=row.id)
    return response, 202


@bp.get("")
def list_replications() -> Any:
    """Jobs, newest first: ``?status=a,b&vm_context_id=&vma_id=&active=&limit=&offset=``."""
    statuses = [s for s in (request.args.get("status") or "").split(",") if s]
    valid = {s.value for s in JobStatus}
    for s in statuses:
        if s not in valid:
            raise invalid("status", "must be one or more of " + ", ".join(sorted(valid)))
    limit, offset = page()
    rows, total = jobs.list_jobs(
        status=statuses or None,
        context_id=request.args.get("vm_context_id") or None,
        vma_id=request.args.get("vma_id") or None,
        active=query_bool("active"),
        limit=limit,
        offset=offset,
    )
    names = contexts.names({r.context_id for r in rows})
    return jsonify(
        {
            "items": [job(r, context_name=names.get(r.context_id)) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


@bp.get("/<job_id>")
def get_replication(job_id: str) -> Any:
    """One job with its per-disk rows, and ``resume``: whether this full sync continued a
    failed one's copy (``from_job``, ``resumed``, per-disk byte ``disks`` offsets, ``reason``
    when not) — null when it did not ask."""
    row = jobs.get_job(job_id)
    name = contexts.names([row.context_id]).get(row.context_id)
    data = job(row, jobs.list_job_disks(job_id), context_name=name)
    data["resume"] = resume.decision(job_id)
    return jsonify(data)


@bp.post("/<job_id>/stop")
def stop_replication(job_id: str) -> Any:
    """Stop a job: a pending job stops at once (200); a running one is flagged and the worker
    stops it on the VMA (202). 409 when the job is already finished."""
    row = jobs.request_stop(job_id)
    status = 200 if JobStatus(row.status).is_terminal else 202
    return jsonify(job(row)), status


@bp.delete("/<job_id>")
def delete_replication(job_id: str) -> Any:
    """Delete a finished job (409 while it is active; stop it first)."""
    jobs.delete_job(job_id)
    return "", 204
