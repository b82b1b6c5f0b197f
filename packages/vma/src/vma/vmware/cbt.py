"""Changed block tracking: per-disk change IDs of a snapshot and changed areas, paged."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from vma.errors import ChangeIdError, VmwareError
from vma.vmware.properties import retrieve_one


def snapshot_disks(si: vim.ServiceInstance, snapshot: Any) -> dict[str, Any]:
    """The virtual disks recorded in a snapshot's configuration, by (string) device key."""
    props = retrieve_one(si, snapshot, ["config.hardware.device"])
    return {
        str(d.key): d
        for d in props.get("config.hardware.device") or []
        if isinstance(d, vim.vm.device.VirtualDisk)
    }


def change_ids(si: vim.ServiceInstance, snapshot: Any) -> dict[str, str | None]:
    """disk key → the disk's changeId in that snapshot (None when CBT was off)."""
    return {
        key: (getattr(d.backing, "changeId", None) or None)
        for key, d in snapshot_disks(si, snapshot).items()
    }


def generation(change_id: str | None) -> str | None:
    """The CBT tracking UUID of a change ID (``"52 … …/17"`` → ``"52 … …"``); None for ``*``."""
    if not change_id or change_id == "*" or "/" not in change_id:
        return None
    return change_id.rsplit("/", 1)[0]


def coalesce(extents: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort extents and merge the ones that touch or overlap."""
    merged: list[tuple[int, int]] = []
    for start, length in sorted(e for e in extents if e[1] > 0):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last_start, last_len = merged[-1]
            merged[-1] = (last_start, max(last_len, start + length - last_start))
        else:
            merged.append((start, length))
    return merged


def changed_areas(
    si: vim.ServiceInstance,
    vm: vim.VirtualMachine,
    snapshot: Any,
    disk_key: str,
    change_id: str,
    *,
    vm_id: str | None = None,
) -> list[tuple[int, int]]:
    """Every area of disk ``disk_key`` changed since ``change_id`` ("*" = all allocated areas),
    as sorted, merged ``(offset, length)`` pairs. QueryChangedDiskAreas answers bounded
    windows; this pages (startOffset = previous start + length) to the end of the disk.

    A change ID whose tracking UUID differs from the snapshot disk's (CBT was reset), or a
    snapshot taken with CBT off, raises ``ChangeIdError`` before asking vCenter: vCenter may
    answer such a query with a fault or, worse, with areas that are not complete."""
    disks = snapshot_disks(si, snapshot)
    disk = disks.get(str(disk_key))
    if disk is None:
        raise VmwareError(
            f"disk {disk_key} is not in snapshot {snapshot._moId} (disks: {sorted(disks)})",
            vm_id=vm_id,
        )
    if change_id != "*":
        current = getattr(disk.backing, "changeId", None)
        if not current:
            raise ChangeIdError(
                f"disk {disk_key} had CBT off in snapshot {snapshot._moId}: "
                f"change ID {change_id!r} cannot be used, a full copy is needed",
                vm_id=vm_id,
            )
        if generation(change_id) != generation(current):
            raise ChangeIdError(
                f"change ID {change_id!r} of disk {disk_key} belongs to another CBT generation "
                f"than the snapshot's {current!r} (CBT was reset): a full copy is needed",
                vm_id=vm_id,
            )
    capacity = disk.capacityInBytes or (disk.capacityInKB or 0) * 1024
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < capacity:
        info = vm.QueryChangedDiskAreas(
            snapshot=snapshot, deviceKey=disk.key, startOffset=offset, changeId=change_id
        )
        extents.extend((a.start, a.length) for a in info.changedArea or [])
        next_offset = info.startOffset + info.length
        if next_offset <= offset:
            raise VmwareError(
                f"QueryChangedDiskAreas made no progress at offset {offset} of disk {disk_key}",
                vm_id=vm_id,
            )
        offset = next_offset
    return [(s, min(length, capacity - s)) for s, length in coalesce(extents) if s < capacity]
