"""Replications: create (202, the worker does the work), list, get, stop, delete."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, g, jsonify, url_for
from pydantic import ConfigDict, Field, model_validator

from migration_common import canonical_vm_id

from ..database.models import ContextState, JobStatus, RequestedType, VmContext
from ..database.repos import contexts, jobs
from ..errors import ConflictError
from ..services._queries import write_transaction
from ..workflows import records, resume
from .errors import ApiError
from .paging import cursor_key, page_json
from .requests import Body, Id, KeysetPageQuery, NoBody, VmId, body, query, unprocessable
from .serialize import job, job_document
from .targets import refuse_disks_too_large

bp = Blueprint("replications", __name__, url_prefix="/api/v1/replications")


class ReplicationCreate(Body):
    """``POST /replications``: a managed VM by context id, or by VMware id (and VMA)."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["vm_context_id"]}, {"required": ["vm_id"]}]}
    )

    vm_context_id: Id = None  # type: ignore[assignment]
    vm_id: VmId = None  # type: ignore[assignment]
    vma_id: Id = None  # type: ignore[assignment]
    type: Literal["auto", "full", "incremental"] = "auto"
    verify: bool | None = Field(
        None, description="read every disk back and compare sha256; default: replication_defaults"
    )

    @model_validator(mode="after")
    def _which_vm(self) -> ReplicationCreate:
        if self.vm_context_id is None and self.vm_id is None:
            raise ValueError("vm_context_id: is required (or vm_id with vma_id)")
        return self


_STATUS = "|".join(s.value for s in JobStatus)


class ReplicationsQuery(KeysetPageQuery):
    """``GET /replications``."""

    status: str | None = Field(
        None, pattern=f"^({_STATUS})(,({_STATUS}))*$", description="comma-separated statuses"
    )
    vm_context_id: Id | None = None
    vma_id: Id | None = None
    active: bool | None = None


def _resolve_context(data: ReplicationCreate) -> VmContext:
    if data.vm_context_id is not None:
        return contexts.get_context(data.vm_context_id.strip())
    wanted = canonical_vm_id(data.vm_id.strip())
    vma_id = data.vma_id.strip() if data.vma_id else None
    row = contexts.find_context(vm_id=wanted, vma_id=vma_id)
    if row is None:
        raise ApiError(
            "not_found", f"VM {wanted} is not managed; add it through discovery first", 404, "vm_id"
        )
    return row


@bp.post("")
@body(ReplicationCreate)
def create_replication() -> Any:
    """Request a replication: ``{"vm_context_id" | "vm_id" + "vma_id"?, "type":
    "auto|full|incremental", "verify"?}`` → 202 with the job (``verify``: the VMA reads every
    disk back and compares sha256; default: the VM's ``replication_defaults``); 409 when the VM
    has an active job or an active failover, rollback (whose own final sync creates its job
    directly), cleanup or test failover start or end, 409 when it is failed over live, and 409
    ``disk_too_large`` when the target's disk offering cannot carry one of its disks. A VM
    whose test failover runs (``failed_over_test``) replicates as usual: the test VM runs on
    copies of the replicas. ``vm_id`` is taken in canonical form (a UUID in lower case)."""
    data: ReplicationCreate = g.body
    kind, verify = RequestedType(data.type), data.verify
    ctx = _resolve_context(data)
    # a test failover runs on copies of the replicas: syncs go on beside it
    if ctx.state == ContextState.FAILED_OVER_LIVE.value:
        raise ApiError(
            "invalid_state",
            f"VM {ctx.name} is {ctx.state}; roll the failover back before replicating it again",
            409,
        )
    if ctx.vma_id is None:
        raise unprocessable(
            "vma_id", f"VM context {ctx.id} has no VMA; register one and add the VM again"
        )
    refuse_disks_too_large(ctx, "vm_context_id" if data.vm_context_id else "vm_id")
    if kind is RequestedType.INCREMENTAL:
        disks = contexts.list_disks(ctx.id)
        if not disks or any(d.change_id is None for d in disks):
            raise unprocessable(
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
@query(ReplicationsQuery)
def list_replications() -> Any:
    """Jobs, newest first: ``?status=a,b&vm_context_id=&vma_id=&active=&limit=&offset=&after=``
    (``after``: the previous page's ``next_after``)."""
    q: ReplicationsQuery = g.query
    limit, offset = q.limit, q.offset
    with cursor_key(q.after) as after:
        found = jobs.list_jobs(
            job_document(),
            status=q.status.split(",") if q.status else None,
            context_id=q.vm_context_id,
            vma_id=q.vma_id,
            active=q.active,
            limit=limit,
            offset=offset,
            after=after,
        )
    return jsonify(page_json(found, limit=limit, offset=offset))


@bp.get("/<job_id>")
def get_replication(job_id: str) -> Any:
    """One job with its per-disk rows, and ``resume``: whether this full sync continued a
    failed one's copy (``from_job``, ``resumed``, per-disk byte ``disks`` offsets, ``reason``
    when not) — null when it did not ask."""
    row = jobs.get_job(job_id)
    name = row.vm_name or contexts.names([row.context_id]).get(row.context_id)
    data = job(row, jobs.list_job_disks(job_id), context_name=name)
    data["resume"] = resume.decision(job_id)
    return jsonify(data)


@bp.post("/<job_id>/stop")
@body(NoBody)
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
