"""Snapshot trees: find, list and order a VM's snapshots (read in bulk)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from vma.vmware.properties import retrieve_one


@dataclass(frozen=True)
class SnapshotEntry:
    """One snapshot of a VM: moref id, name, depth in the tree and the managed object."""

    id: str
    name: str
    description: str
    depth: int
    ref: Any


def _walk(trees: list[Any] | None, depth: int = 0) -> Iterator[SnapshotEntry]:
    for tree in trees or []:
        yield SnapshotEntry(
            id=tree.snapshot._moId,
            name=tree.name,
            description=tree.description or "",
            depth=depth,
            ref=tree.snapshot,
        )
        yield from _walk(tree.childSnapshotList, depth + 1)


def list_snapshots(si: vim.ServiceInstance, vm: vim.VirtualMachine) -> list[SnapshotEntry]:
    """Every snapshot of ``vm``, parents before children (empty when it has none)."""
    props = retrieve_one(si, vm, ["snapshot.rootSnapshotList"])
    return list(_walk(props.get("snapshot.rootSnapshotList")))


def find_snapshot(
    si: vim.ServiceInstance, vm: vim.VirtualMachine, snapshot_id: str
) -> SnapshotEntry | None:
    """The snapshot of ``vm`` with moref id ``snapshot_id``, or None."""
    for entry in list_snapshots(si, vm):
        if entry.id == snapshot_id:
            return entry
    return None
