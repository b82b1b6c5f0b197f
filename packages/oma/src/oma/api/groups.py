"""Machine groups (waves): CRUD and members. A VM belongs to at most one group.

A group's ``priority`` orders admission across groups (higher first) and ``max_concurrent``
caps its admitted jobs (0: no limit): :mod:`oma.services.admission`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, url_for

from ..database.db import database
from ..database.models import MachineGroup, VmContext
from ..database.repos import groups
from .errors import invalid
from .schemas import GROUP_CREATE, GROUP_MEMBERS, GROUP_PATCH, body
from .serialize import ts
from .validation import json_body, no_unknown, string, string_list

bp = Blueprint("groups", __name__, url_prefix="/api/v1/groups")

FIELDS = ("name", "description", "priority", "max_concurrent")


def integer(data: dict[str, Any], name: str, *, minimum: int, maximum: int = 100000) -> int:
    """A JSON integer field within bounds (booleans refused)."""
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, "must be an integer")
    if not minimum <= value <= maximum:
        raise invalid(name, f"must be between {minimum} and {maximum}")
    return value


def _fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if creating or "name" in data:
        fields["name"] = string(data, "name", max_length=100)
    if "description" in data:
        fields["description"] = string(data, "description", required=False, max_length=2000)
    if "priority" in data:
        fields["priority"] = integer(data, "priority", minimum=-1000, maximum=1000)
    if "max_concurrent" in data:
        fields["max_concurrent"] = integer(data, "max_concurrent", minimum=0)
    return fields


def _context_ids(data: dict[str, Any], name: str = "vm_context_ids") -> list[str]:
    """Known VM context ids from a list field (400 naming the unknown entry)."""
    ids = string_list(data, name)
    known = {c.id for c in VmContext.select(VmContext.id).where(VmContext.id.in_(ids))}
    for i, cid in enumerate(ids):
        if cid not in known:
            raise invalid(f"{name}[{i}]", f"unknown VM context {cid}")
    return ids


def group_json(row: MachineGroup, *, member_count: int | None = None) -> dict[str, Any]:
    """A group; with its members when ``member_count`` is not given."""
    data: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "priority": row.priority,
        "max_concurrent": row.max_concurrent,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
    }
    if member_count is not None:
        data["member_count"] = member_count
        return data
    members = groups.members(row.id)
    data["member_count"] = len(members)
    data["members"] = [
        {
            "vm_context_id": c.id,
            "name": c.name,
            "state": c.state,
            "active_job_id": c.active_job_id,
        }
        for c in members
    ]
    return data


@bp.get("")
def list_groups() -> Any:
    """Groups, highest priority first, with their member counts."""
    rows = groups.list_groups()
    counts = groups.member_counts(r.id for r in rows)
    return jsonify({"items": [group_json(r, member_count=counts.get(r.id, 0)) for r in rows]})


@bp.post("")
@body(GROUP_CREATE)
def create_group() -> Any:
    """Create a group: ``{"name", "priority"?, "max_concurrent"? (0: no limit),
    "description"?, "vm_context_ids"?}`` → 201; 409 for a taken name or a VM in another group."""
    data = json_body()
    no_unknown(data, (*FIELDS, "vm_context_ids"))
    fields = _fields(data, creating=True)
    ids = _context_ids(data) if data.get("vm_context_ids") else []
    with database.atomic():
        row = groups.create_group(fields.pop("name"), **fields)
        groups.add_members(row.id, ids)
    response = jsonify(group_json(row))
    response.headers["Location"] = url_for(".get_group", group_id=row.id)
    return response, 201


@bp.get("/<group_id>")
def get_group(group_id: str) -> Any:
    """One group with its VMs."""
    return jsonify(group_json(groups.get_group(group_id)))


@bp.patch("/<group_id>")
@body(GROUP_PATCH)
def update_group(group_id: str) -> Any:
    """Change a group's name, priority, max_concurrent or description."""
    data = json_body()
    no_unknown(data, FIELDS)
    return jsonify(group_json(groups.update_group(group_id, _fields(data, creating=False))))


@bp.delete("/<group_id>")
def delete_group(group_id: str) -> Any:
    """Delete a group (its VMs stay managed); 409 while a schedule targets it."""
    groups.delete_group(group_id)
    return "", 204


@bp.post("/<group_id>/members")
@body(GROUP_MEMBERS)
def add_members(group_id: str) -> Any:
    """Add VMs: ``{"vm_context_ids": [...]}`` → the group; 400 naming an unknown VM, 409 for a
    VM in another group (a VM belongs to at most one group)."""
    groups.get_group(group_id)
    data = json_body()
    no_unknown(data, ("vm_context_ids",))
    groups.add_members(group_id, _context_ids(data))
    return jsonify(group_json(groups.get_group(group_id)))


@bp.delete("/<group_id>/members/<context_id>")
def remove_member(group_id: str, context_id: str) -> Any:
    """Take a VM out of the group (404 when it is not a member)."""
    groups.remove_member(group_id, context_id)
    return "", 204
