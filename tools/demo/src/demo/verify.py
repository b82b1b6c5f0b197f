"""Byte equality: each source disk (qcow2, read with qemu-img) vs its replica volume's file.

The replica's bytes are the CloudStack simulator's backing file of the volume
(``<state dir>/volumes/<volume id>.img``), compared over the source disk's size. A volume may be
larger than its disk (CloudStack sizes volumes in whole GB, and a disk offering that is not
customized gives every volume its fixed size): the rest of the volume must hold zeroes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 4 << 20


@dataclass
class DiskCheck:
    """One disk's comparison."""

    disk_key: str
    volume_id: str
    size: int
    source_sha256: str
    replica_sha256: str
    tail_bytes: int = 0
    tail_zero: bool = True

    @property
    def equal(self) -> bool:
        """True when the replica holds exactly the source's bytes, then only zeroes."""
        return self.source_sha256 == self.replica_sha256 and self.tail_zero


def file_sha256(path: Path, size: int) -> str:
    """sha256 of the first ``size`` bytes of a file (zero-padded when the file is shorter)."""
    digest = hashlib.sha256()
    left = size
    with open(path, "rb") as fh:
        while left > 0:
            block = fh.read(min(CHUNK, left))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    while left > 0:
        n = min(CHUNK, left)
        digest.update(bytes(n))
        left -= n
    return digest.hexdigest()


def zero_tail(path: Path, start: int) -> tuple[int, bool]:
    """(bytes after ``start``, whether they are all zero) of a file; holes are skipped
    (``SEEK_DATA``), so a large sparse volume is checked by reading only what it stores."""
    with open(path, "rb") as fh:
        end = os.fstat(fh.fileno()).st_size
        pos = start
        while pos < end:
            try:
                pos = os.lseek(fh.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            hole = os.lseek(fh.fileno(), pos, os.SEEK_HOLE)
            fh.seek(pos)
            while pos < hole:
                block = fh.read(min(CHUNK, hole - pos))
                if not block:
                    break
                if block.count(0) != len(block):
                    return max(0, end - start), False
                pos += len(block)
    return max(0, end - start), True


def replica_volumes(context_id: str, keys: list[str], sim: Any) -> dict[str, dict[str, Any]]:
    """CloudStack volume (as ``listVolumes`` returns it) of each disk key's replica.

    The OMA names replica volumes deterministically (``oma.workflows.replication.volume_name``),
    so the CloudStack API itself tells which volume holds which disk and where it is attached.
    """
    from oma.cloudstack import CloudStackClient
    from oma.workflows.replication import volume_name

    client = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
    try:
        out = {}
        for key in keys:
            found = client.list_volumes(name=volume_name(context_id, key))
            if len(found) != 1:
                raise ValueError(f"{len(found)} CloudStack volumes for disk {key}, expected one")
            out[key] = found[0]
        return out
    finally:
        client.close()


def check_context(context: dict[str, Any], images: dict[str, str], sim: Any) -> list[DiskCheck]:
    """Compare every disk of an OMA VM context (``GET /vm-contexts/{id}``) with its replica."""
    from labtest.labvm import lab_disk_sha256

    disks = sorted(context["disks"], key=lambda d: int(d["disk_key"]))
    # the OMA lists each disk's replica volume with its CloudStack id (GET /vm-contexts/{id});
    # CloudStack itself (by the OMA's volume naming) is asked only when it does not
    volumes = {
        str(v["disk_key"]): {"id": v["cloudstack_volume_id"]}
        for v in context.get("volumes") or []
        if v.get("cloudstack_volume_id")
    }
    if len(volumes) != len(disks):
        volumes = replica_volumes(context["id"], [str(d["disk_key"]) for d in disks], sim)
    checks = []
    for disk in disks:
        key, size = str(disk["disk_key"]), int(disk["capacity_bytes"])
        volume_id = volumes[key]["id"]
        backing = Path(sim.state_dir) / "volumes" / f"{volume_id}.img"
        replica = file_sha256(backing, size) if backing.exists() else "missing"
        tail, zero = zero_tail(backing, size) if backing.exists() else (0, True)
        checks.append(
            DiskCheck(
                disk_key=key,
                volume_id=volume_id,
                size=size,
                source_sha256=lab_disk_sha256(images[key], size=size),
                replica_sha256=replica,
                tail_bytes=tail,
                tail_zero=zero,
            )
        )
    return checks
