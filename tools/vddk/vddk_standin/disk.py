"""A lab disk image read as VDDK reads a snapshot disk: its bytes and its allocation.

The lab keeps each VM disk as ``<lab dir>/<VM config.uuid>/<disk key>.qcow2`` with a write
journal ``<disk key>.journal`` (one line per write, tools/labtest labvm). The image is mapped
once with ``qemu-img map`` (which guest ranges hold data, and where in the qcow2 file); reads
come straight from the file at those offsets, everything else reads as zeroes, and the same map
answers the NBD ``base:allocation`` extents. The lab keeps no older copy of a disk, so a
snapshot disk can only be served while the disk is unchanged since the snapshot: its change ID
``<uuid>/<n>`` (vcsim numbers it by the journal) must still be the journal's length.
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOLE, ZERO = 1, 2  # nbdkit.EXTENT_HOLE, nbdkit.EXTENT_ZERO


class DiskError(Exception):
    """The lab has no such disk, or cannot serve it as of the snapshot."""


@dataclass(frozen=True)
class Extent:
    """One range of the qemu-img map: guest ``start``/``length``, ``offset`` in the file."""

    start: int
    length: int
    data: bool
    zero: bool
    offset: int | None


def journal_records(journal: Path) -> int:
    """How many writes the lab recorded for a disk."""
    try:
        with open(journal) as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def qemu_map(image: Path) -> list[Extent]:
    """``qemu-img map`` of a qcow2 image (read with -U: the image may be open elsewhere)."""
    result = subprocess.run(
        ["qemu-img", "map", "-U", "-f", "qcow2", "--output=json", str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DiskError(f"qemu-img map {image}: {result.stderr.strip()}")
    extents = []
    for entry in json.loads(result.stdout):
        extent = Extent(
            int(entry["start"]),
            int(entry["length"]),
            bool(entry["data"]),
            bool(entry["zero"]),
            entry.get("offset"),
        )
        if extent.data and (extent.offset is None or entry.get("depth", 0) != 0):
            raise DiskError(f"{image}: data at {extent.start} is not stored plainly in the file")
        extents.append(extent)
    return extents


class LabDisk:
    """An open lab disk image: size, reads, allocation."""

    def __init__(self, image: Path, capacity: int) -> None:
        self.image = image
        self.extents = qemu_map(image)
        self.starts = [e.start for e in self.extents]
        self.size = sum(e.length for e in self.extents)
        if self.size != capacity:
            raise DiskError(
                f"{image} holds {self.size} bytes but vCenter says the disk has {capacity}"
            )
        self.fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        """Close the image."""
        os.close(self.fd)

    def _covering(self, offset: int, count: int) -> list[Extent]:
        first = max(bisect.bisect_right(self.starts, offset) - 1, 0)
        end = offset + count
        found = []
        for extent in self.extents[first:]:
            if extent.start >= end:
                break
            found.append(extent)
        return found

    def pread(self, buf: bytearray | memoryview, offset: int) -> None:
        """Fill ``buf`` with the guest bytes at ``offset``."""
        view = memoryview(buf)
        end = offset + len(view)
        for extent in self._covering(offset, len(view)):
            lo, hi = max(offset, extent.start), min(end, extent.start + extent.length)
            part = view[lo - offset : hi - offset]
            if extent.data and extent.offset is not None:
                got = os.preadv(self.fd, [part], extent.offset + (lo - extent.start))
                if got != len(part):
                    raise DiskError(f"short read of {self.image} at guest offset {lo}")
            else:
                part[:] = bytes(len(part))

    def allocation(self, offset: int, count: int) -> list[tuple[int, int, int]]:
        """``(offset, length, type)`` extents for nbdkit: data 0, unallocated HOLE|ZERO."""
        end = offset + count
        result = []
        for extent in self._covering(offset, count):
            lo, hi = max(offset, extent.start), min(end, extent.start + extent.length)
            kind = 0 if extent.data else (HOLE | ZERO if extent.zero else HOLE)
            result.append((lo, hi - lo, kind))
        return result


def open_snapshot_disk(
    lab_dir: Path, vm_uuid: str, disk_key: str, change_id: str | None, capacity: int
) -> LabDisk:
    """The lab image of one disk, refused when it was written after the snapshot."""
    image = lab_dir / vm_uuid / f"{disk_key}.qcow2"
    if not image.is_file():
        raise DiskError(f"the lab has no image for disk {disk_key} of VM {vm_uuid}: {image}")
    if change_id and "/" in change_id:
        at_snapshot = change_id.rsplit("/", 1)[1]
        now = journal_records(image.with_suffix(".journal"))
        if at_snapshot.isdigit() and int(at_snapshot) != now:
            raise DiskError(
                f"disk {disk_key} of VM {vm_uuid} was written after the snapshot (change ID "
                f"{change_id!r}, {now} writes recorded); the lab keeps no older copy of a disk"
            )
    return LabDisk(image, capacity)
