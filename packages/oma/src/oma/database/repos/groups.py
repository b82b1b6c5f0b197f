"""machine_groups and machine_group_members: waves of VMs admitted by priority and cap.

A VM belongs to at most one group (``machine_group_members.context_id`` is unique): adding a
VM that is in another group is a ConflictError naming that group; adding it again to its own
group changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from peewee import IntegrityError, fn

from ...errors import ConflictError, NotFoundError
from ..db import database
from ..models import GroupMember, MachineGroup, Schedule, VmContext
from ._util import get_or_raise, translate_integrity, update_row


def create_group(
    name: str, *, priority: int = 0, max_concurrent: int = 0, description: str | None = None
) -> MachineGroup:
    """A new group; ConflictError when the name is taken."""
    with translate_integrity(f"a group named {name!r} already exists", field="name"):
        return MachineGroup.create(
            name=name, priority=priority, max_concurrent=max_concurrent, description=description
        )


def get_group(group_id: str) -> MachineGroup:
    """The group with this id, or NotFoundError."""
    return get_or_raise(MachineGroup, group_id, "group")


def list_groups() -> list[MachineGroup]:
    """Every group, highest priority first, then by name."""
    return list(MachineGroup.select().order_by(MachineGroup.priority.desc(), MachineGroup.name))


def member_counts(group_ids: Iterable[str]) -> dict[str, int]:
    """How many VMs each group has."""
    ids = list(group_ids)
    if not ids:
        return {}
    rows = (
        GroupMember.select(GroupMember.group, fn.COUNT(GroupMember.id).alias("n"))
        .where(GroupMember.group.in_(ids))
        .group_by(GroupMember.group)
    )
    return {r.group_id: r.n for r in rows}


def update_group(group_id: str, fields: dict[str, Any]) -> MachineGroup:
    """Change name, priority, max_concurrent or description."""
    return update_row(MachineGroup, group_id, "group", fields)


def delete_group(group_id: str) -> None:
    """Delete a group (its memberships go with it); ConflictError while a schedule targets it."""
    group = get_group(group_id)
    names = [s.name for s in Schedule.select(Schedule.name).where(Schedule.group == group.id)]
    if names:
        raise ConflictError(
            f"group {group.name} is the target of schedule(s) {', '.join(sorted(names))}; "
            "delete those first",
            field="group_id",
        )
    group.delete_instance()


def members(group_id: str) -> list[VmContext]:
    """The group's VMs, by name."""
    return list(
        VmContext.select()
        .join(GroupMember, on=GroupMember.context == VmContext.id)
        .where(GroupMember.group == group_id)
        .order_by(VmContext.name, VmContext.id)
    )


def add_members(group_id: str, context_ids: Iterable[str]) -> list[str]:
    """Add VMs to a group (all or none); returns the ids added (already members are skipped).

    NotFoundError for an unknown VM context, ConflictError for a VM in another group.
    """
    group = get_group(group_id)
    ids = list(dict.fromkeys(context_ids))
    with database.atomic():
        found = {c.id: c for c in VmContext.select().where(VmContext.id.in_(ids))}
        for cid in ids:
            if cid not in found:
                raise NotFoundError(f"vm context {cid} not found", kind="vm context", id=cid)
        current = {
            m.context_id: m
            for m in GroupMember.select(GroupMember, MachineGroup)
            .join(MachineGroup)
            .where(GroupMember.context.in_(ids))
        }
        added = []
        for cid in ids:
            member = current.get(cid)
            if member is not None and member.group_id == group.id:
                continue
            if member is not None:
                raise ConflictError(
                    f"VM {found[cid].name} is already in group {member.group.name}; a VM "
                    "belongs to at most one group (remove it there first)",
                    field="vm_context_ids",
                )
            try:
                with database.atomic():
                    GroupMember.create(group=group.id, context=cid)
            except IntegrityError as exc:  # added to another group a moment ago
                raise ConflictError(
                    f"VM {found[cid].name} was just added to another group",
                    field="vm_context_ids",
                ) from exc
            added.append(cid)
    return added


def remove_member(group_id: str, context_id: str) -> None:
    """Take a VM out of a group (NotFoundError when it is not a member)."""
    get_group(group_id)
    deleted = (
        GroupMember.delete()
        .where(GroupMember.group == group_id, GroupMember.context == context_id)
        .execute()
    )
    if not deleted:
        raise NotFoundError(
            f"vm context {context_id} is not a member of group {group_id}",
            kind="group member",
            id=context_id,
        )


def groups_of(context_ids: Iterable[str]) -> dict[str, MachineGroup]:
    """The group of each of these VMs that has one."""
    ids = list(context_ids)
    if not ids:
        return {}
    rows = (
        GroupMember.select(GroupMember, MachineGroup)
        .join(MachineGroup)
        .where(GroupMember.context.in_(ids))
    )
    return {m.context_id: m.group for m in rows}
