"""VM contexts: list (filters, pagination), get with disks, jobs and events, delete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, g, jsonify
from pydantic import ConfigDict, Field, model_validator

from ..database.models import ContextState
from ..database.repos import contexts, events, jobs
from ..services._queries import write_transaction
from .paging import cursor_key, page_json
from .requests import (
    Body,
    Id,
    KeysetPageQuery,
    Line,
    Query,
    body,
    optional,
    query,
    unprocessable,
)
from .serialize import context, context_document, disk, event, job_document, volume

bp = Blueprint("vm_contexts", __name__, url_prefix="/api/v1/vm-contexts")


class ContextsQuery(KeysetPageQuery):
    """``GET /vm-contexts``."""

    state: Literal[tuple(s.value for s in ContextState)] | None = None  # type: ignore[valid-type]
    vma_id: Id | None = None
    name: Line | None = None


class ContextQuery(Query):
    """``GET /vm-contexts/{id}``: how many recent jobs and events to include."""

    jobs: Annotated[int, Field(ge=0, le=500)] = 20
    events: Annotated[int, Field(ge=0, le=1000)] = 100


class FailoverDefaults(Body):
    """Failover request fields fixed per VM (null removes one)."""

    boot_disk_key: optional(Id) = None
    template_id: optional(Id) = None


class ReplicationDefaults(Body):
    """Replication request fields fixed per VM (null removes one)."""

    verify: bool | None = None


class ContextPatch(Body):
    """``PATCH /vm-contexts/{id}``: at least one of the two."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": ["failover_defaults"]}, {"required": ["replication_defaults"]}]
        }
    )

    failover_defaults: FailoverDefaults = None  # type: ignore[assignment]
    replication_defaults: ReplicationDefaults = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _something(self) -> ContextPatch:
        if not self.given():
            raise ValueError("failover_defaults: is required (or replication_defaults)")
        return self


@bp.get("")
@query(ContextsQuery)
def list_contexts() -> Any:
    """Protected VMs by name: ``?state=&vma_id=&name=&limit=&offset=&after=`` (``after``: the
    previous page's ``next_after``) → ``{items, total, has_more, next_after, ...}``."""
    q: ContextsQuery = g.query
    limit, offset = q.limit, q.offset
    with cursor_key(q.after) as after:
        found = contexts.list_contexts(
            context_document(),
            state=q.state,
            vma_id=q.vma_id,
            name=q.name,
            limit=limit,
            offset=offset,
            after=after,
        )
    return jsonify(page_json(found, limit=limit, offset=offset))


@bp.get("/<context_id>")
@query(ContextQuery)
def get_context(context_id: str) -> Any:
    """One VM context with its disks, replica volumes (and their NBD exports), recent jobs
    (``?jobs=20``; ``jobs_total`` counts its jobs up to 1,000, ``jobs_total_exact`` false
    beyond) and events (``?events=100``)."""
    row = contexts.get_context(context_id)
    job_limit, event_limit = g.query.jobs, g.query.events
    recent = jobs.list_jobs(job_document(), context_id=context_id, limit=job_limit)
    data = context(row)
    data["disks"] = [disk(d) for d in contexts.list_disks(context_id)]
    data["volumes"] = _volumes(context_id)
    data["jobs"] = recent.items
    data["jobs_total"] = recent.total
    data["jobs_total_exact"] = recent.total_exact
    data["events"] = (
        [event(e) for e in events.list_events(context_id=context_id, limit=event_limit)]
        if event_limit
        else []
    )
    return jsonify(data)


@bp.patch("/<context_id>")
@body(ContextPatch)
def update_context(context_id: str) -> Any:
    """Set the VM's defaults: ``{"failover_defaults"?: {"boot_disk_key"?, "template_id"?},
    "replication_defaults"?: {"verify"?}}`` (at least one; a null value removes one) → the
    context; 400 naming the field that breaks the schema, 422 for a boot disk that is not a
    disk of this VM."""
    row = contexts.get_context(context_id)
    data: ContextPatch = g.body
    given = data.given()
    if "failover_defaults" in given:
        failover = _merge(row.failover_defaults, data.failover_defaults)
        keys = [d.disk_key for d in contexts.list_disks(context_id)]
        if failover and "boot_disk_key" in failover and failover["boot_disk_key"] not in keys:
            raise unprocessable(
                "failover_defaults.boot_disk_key",
                f"{failover['boot_disk_key']} is not a disk of this VM "
                f"({', '.join(keys) or 'none'})",
            )
    if "replication_defaults" in given:
        replication = _merge(row.replication_defaults, data.replication_defaults)
    with write_transaction():
        if "failover_defaults" in given:
            contexts.set_failover_defaults(context_id, failover)
        if "replication_defaults" in given:
            contexts.set_replication_defaults(context_id, replication)
    return jsonify(context(contexts.get_context(context_id)))


def _merge(current: dict[str, Any] | None, given: Body) -> dict[str, Any] | None:
    """``current`` with the given fields set (stripped) or, when null, removed."""
    merged = dict(current or {})
    for name in given.given():
        value = getattr(given, name)
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value.strip() if isinstance(value, str) else value
    return merged or None


def _volumes(context_id: str) -> list[dict[str, Any]]:
    rows = contexts.list_volumes(context_id)
    exports = contexts.exports_by_volume(r.id for r in rows)
    return [volume(r, exports.get(r.id, [])) for r in rows]


@bp.delete("/<context_id>")
def delete_context(context_id: str) -> Any:
    """Stop managing a VM: 204 when it has no replica volumes; otherwise 202 with a cleanup
    workflow that deletes the volumes and exports first, then the context. 409 while a job,
    failover or rollback is active, or while the VM is failed over."""
    from ..workflows.cleanup import ensure_cleanup_allowed
    from .workflows import has_replicas, queue_cleanup

    ctx = contexts.get_context(context_id)
    if has_replicas(context_id):
        return queue_cleanup(ctx, delete_context=True)
    with write_transaction():
        ensure_cleanup_allowed(context_id)
        contexts.delete_context(context_id)
    return "", 204
