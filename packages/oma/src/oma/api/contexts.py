"""VM contexts: list (filters, pagination), get with disks, jobs and events, delete."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from ..database.models import ContextState
from ..database.repos import contexts, events, jobs
from ..services._queries import write_transaction
from .errors import invalid
from .schemas import CONTEXT_PATCH, body
from .serialize import context, disk, event, job, volume
from .validation import json_body, no_unknown, page, query_int

bp = Blueprint("vm_contexts", __name__, url_prefix="/api/v1/vm-contexts")


@bp.get("")
def list_contexts() -> Any:
    """Protected VMs: ``?state=&vma_id=&name=&limit=&offset=`` → ``{items, total, ...}``."""
    state = request.args.get("state") or None
    if state and state not in {s.value for s in ContextState}:
        raise invalid("state", "must be one of " + ", ".join(s.value for s in ContextState))
    limit, offset = page()
    rows, total = contexts.list_contexts(
        state=state,
        vma_id=request.args.get("vma_id") or None,
        name=request.args.get("name") or None,
        limit=limit,
        offset=offset,
    )
    disks = contexts.disks_by_context(r.id for r in rows)
    items = []
    for row in rows:
        item = context(row)
        item["disks"] = [disk(d) for d in disks[row.id]]
        items.append(item)
    return jsonify({"items": items, "total": total, "limit": limit, "offset": offset})


@bp.get("/<context_id>")
def get_context(context_id: str) -> Any:
    """One VM context with its disks, replica volumes (and their NBD exports), recent jobs
    (``?jobs=20``) and events (``?events=100``)."""
    row = contexts.get_context(context_id)
    job_limit = query_int("jobs", 20, minimum=0, maximum=500)
    event_limit = query_int("events", 100, minimum=0, maximum=1000)
    recent, total = jobs.list_jobs(context_id=context_id, limit=max(job_limit, 1))
    data = context(row)
    data["disks"] = [disk(d) for d in contexts.list_disks(context_id)]
    data["volumes"] = _volumes(context_id)
    data["jobs"] = [job(j, context_name=row.name) for j in recent[:job_limit]]
    data["jobs_total"] = total
    data["events"] = (
        [event(e) for e in events.list_events(context_id=context_id, limit=event_limit)]
        if event_limit
        else []
    )
    return jsonify(data)


FAILOVER_DEFAULTS = ("boot_disk_key", "template_id")
"""What ``failover_defaults`` may hold: the failover request fields an operator fixes per VM."""


@bp.patch("/<context_id>")
@body(CONTEXT_PATCH)
def update_context(context_id: str) -> Any:
    """Set the VM's defaults: ``{"failover_defaults"?: {"boot_disk_key"?, "template_id"?},
    "replication_defaults"?: {"verify"?}}`` (at least one; a null value removes one) → the
    context; 400 naming the field for an unknown field, a value of the wrong type or a boot
    disk that is not a disk of this VM."""
    row = contexts.get_context(context_id)
    data = json_body()
    no_unknown(data, ("failover_defaults", "replication_defaults"))
    if not data:
        raise invalid("failover_defaults", "is required (or replication_defaults)")
    if "failover_defaults" in data:
        failover = _failover_defaults(context_id, row.failover_defaults, data["failover_defaults"])
    if "replication_defaults" in data:
        replication = _replication_defaults(row.replication_defaults, data["replication_defaults"])
    with write_transaction():
        if "failover_defaults" in data:
            contexts.set_failover_defaults(context_id, failover)
        if "replication_defaults" in data:
            contexts.set_replication_defaults(context_id, replication)
    return jsonify(context(contexts.get_context(context_id)))


def _failover_defaults(
    context_id: str, current: dict[str, Any] | None, given: Any
) -> dict[str, Any] | None:
    if not isinstance(given, dict):
        raise invalid("failover_defaults", "must be an object")
    merged = dict(current or {})
    for name, value in given.items():
        field = f"failover_defaults.{name}"
        if name not in FAILOVER_DEFAULTS:
            raise invalid(field, "unknown field; expected " + " or ".join(FAILOVER_DEFAULTS))
        if value is None:
            merged.pop(name, None)
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > 64:
            raise invalid(field, "must be a non-empty string of at most 64 characters")
        merged[name] = value.strip()
    keys = [d.disk_key for d in contexts.list_disks(context_id)]
    if "boot_disk_key" in merged and merged["boot_disk_key"] not in keys:
        raise invalid(
            "failover_defaults.boot_disk_key",
            f"{merged['boot_disk_key']} is not a disk of this VM ({', '.join(keys) or 'none'})",
        )
    return merged or None


REPLICATION_DEFAULTS = ("verify",)
"""What ``replication_defaults`` may hold: the replication request fields fixed per VM (used
by every request, schedule and failover final sync that does not set them itself)."""


def _replication_defaults(current: dict[str, Any] | None, given: Any) -> dict[str, Any] | None:
    if not isinstance(given, dict):
        raise invalid("replication_defaults", "must be an object")
    merged = dict(current or {})
    for name, value in given.items():
        field = f"replication_defaults.{name}"
        if name not in REPLICATION_DEFAULTS:
            raise invalid(field, "unknown field; expected " + " or ".join(REPLICATION_DEFAULTS))
        if value is None:
            merged.pop(name, None)
        elif not isinstance(value, bool):
            raise invalid(field, "must be true, false or null")
        else:
            merged[name] = value
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
