"""Machine groups (waves): CRUD and members. A VM belongs to at most one group.

A group's ``priority`` orders admission across groups (higher first) and ``max_concurrent``
caps its admitted jobs (0: no limit): :mod:`oma.services.admission`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, url_for
from pydantic import Field

from ..database.db import database
from ..database.models import MachineGroup, VmContext
from ..database.repos import groups
from .requests import Body, Id, Name, Text, body, int_between, unprocessable
from .serialize import ts

bp = Blueprint("groups", __name__, url_prefix="/api/v1/groups")


class _GroupFields(Body):
    name: Name = None  # type: ignore[assignment]
    description: Text | None = None
    priority: int_between(-1000, 1000) = Field(0, description="higher is admitted first")
    max_concurrent: int_between(0, 100000) = Field(0, description="0: no limit")


class GroupCreate(_GroupFields):
    """``POST /groups``."""

    name: Name
    vm_context_ids: list[Id] = Field(default_factory=list, max_length=10000)


class GroupPatch(_GroupFields):
    """``PATCH /groups/{id}``: only the fields given change."""


class GroupMembers(Body):
    """``POST /groups/{id}/members``."""

    vm_context_ids: list[Id] = Field(min_length=1, max_length=10000)


def _fields(data: _GroupFields) -> dict[str, Any]:
    fields = {name: getattr(data, name) for name in data.given() - {"vm_context_ids"}}
    if "name" in fields:
        fields["name"] = fields["name"].strip()
    if fields.get("description") is not None:
        fields["description"] = fields["description"].strip() or None
    return fields


def _context_ids(ids: list[str], name: str = "vm_context_ids") -> list[str]:
    """Known VM context ids (422 naming the unknown entry)."""
    ids = [i.strip() for i in ids]
    known = {c.id for c in VmContext.select(VmContext.id).where(VmContext.id.in_(ids))}
    for i, cid in enumerate(ids):
        if cid not in known:
            raise unprocessable(f"{name}[{i}]", f"unknown VM context {cid}")
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
@body(GroupCreate)
def create_group() -> Any:
    """Create a group: ``{"name", "priority"?, "max_concurrent"? (0: no limit),
    "description"?, "vm_context_ids"?}`` → 201; 409 for a taken name or a VM in another group."""
    data: GroupCreate = g.body
    fields = _fields(data)
    ids = _context_ids(data.vm_context_ids)
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
@body(GroupPatch)
def update_group(group_id: str) -> Any:
    """Change a group's name, priority, max_concurrent or description."""
    return jsonify(group_json(groups.update_group(group_id, _fields(g.body))))


@bp.delete("/<group_id>")
def delete_group(group_id: str) -> Any:
    """Delete a group (its VMs stay managed); 409 while a schedule targets it."""
    groups.delete_group(group_id)
    return "", 204


@bp.post("/<group_id>/members")
@body(GroupMembers)
def add_members(group_id: str) -> Any:
    """Add VMs: ``{"vm_context_ids": [...]}`` → the group; 400 naming an unknown VM, 409 for a
    VM in another group (a VM belongs to at most one group)."""
    groups.get_group(group_id)
    groups.add_members(group_id, _context_ids(g.body.vm_context_ids))
    return jsonify(group_json(groups.get_group(group_id)))


@bp.delete("/<group_id>/members/<context_id>")
def remove_member(group_id: str, context_id: str) -> Any:
    """Take a VM out of the group (404 when it is not a member)."""
    groups.remove_member(group_id, context_id)
    return "", 204
