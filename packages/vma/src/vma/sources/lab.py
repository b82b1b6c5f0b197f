"""The lab disk source: a vcsim VM whose disks are local qcow2 images.

Image of disk D of VM V: ``$VMA_LAB_DIR/<V>/<D>.qcow2``. A sync of D with previous change ID P:

1. while the image is not open, add bitmap ``gen-<N+1>`` (the new generation records from now);
2. serve the image read-only with ``qemu-nbd``, one process per disk, on a unix socket (0600)
   in the job's 0700 directory — only this job's migratekit (the VMA's user) reaches it —
   exposing ``qemu:dirty-bitmap:P`` (``-B P``) when P exists and is consistent;
3. plan: incremental from dirty bitmap P, else full (P empty, unknown, missing or inconsistent
   — the reason is logged and put in the plan note); the change ID reported is ``gen-<N+1>``;
4. after the job completes, stop qemu-nbd and remove the generations older than ``gen-<N+1>``.
   After a failed or stopped job nothing is removed, so P stays valid for the retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from migration_common import get_logger

from ..errors import SourceError
from ..services import processes
from . import bitmaps
from .base import (
    DiskRequest,
    PreparedDisk,
    SourceState,
    private_socket,
    socket_dir,
    stop_servers,
    wait_socket,
)

log = get_logger(__name__)


class LabSource:
    """Serves lab VM disks with qemu-nbd; change tracking through dirty bitmap generations."""

    kind = "lab"

    def __init__(
        self,
        lab_dir: str | Path,
        *,
        env: Mapping[str, str],
        qemu_nbd: str = "qemu-nbd",
        connections: int = 4,
    ) -> None:
        self.lab_dir = Path(lab_dir)
        self.env = dict(env)
        self.qemu_nbd = qemu_nbd
        self.connections = connections

    def has_vm(self, vm_id: str) -> bool:
        """True when the lab holds images for ``vm_id``."""
        return (self.lab_dir / vm_id).is_dir()

    def image(self, vm_id: str, disk_key: str) -> Path:
        """Path of the qcow2 image of one disk."""
        return self.lab_dir / vm_id / f"{disk_key}.qcow2"

    def prepare(
        self, vm: dict[str, Any], snapshot_id: str, disks: Sequence[DiskRequest], work_dir: Path
    ) -> tuple[list[PreparedDisk], SourceState]:
        """Add the new bitmap generation and start one read-only qemu-nbd per disk."""
        state = SourceState(kind=self.kind)
        prepared: list[PreparedDisk] = []
        try:
            for disk in disks:
                prepared.append(self._prepare_disk(vm["id"], disk, work_dir, state))
        except BaseException:
            stop_servers(state)
            raise
        return prepared, state

    def _prepare_disk(
        self, vm_id: str, disk: DiskRequest, work_dir: Path, state: SourceState
    ) -> PreparedDisk:
        image = self.image(vm_id, disk.disk_key)
        if not image.is_file():
            raise SourceError(f"lab image for disk {disk.disk_key} missing: {image}")
        existing = {b.name: b for b in bitmaps.list_bitmaps(image)}
        previous = disk.previous_change_id or None
        note = None
        if previous is None:
            note = "no previous change ID: full copy"
        elif previous not in existing:
            note = f"bitmap {previous!r} not found on the image: full copy"
        elif not existing[previous].consistent:
            note = f"bitmap {previous!r} is inconsistent (unclean shutdown): full copy"
            bitmaps.remove_bitmap(image, previous)
        incremental = note is None
        if previous and not incremental:
            log.warning(
                "change tracking unusable, falling back to full copy",
                vm_id=vm_id,
                disk_key=disk.disk_key,
                reason=note,
            )
        new_gen = bitmaps.next_generation(list(existing.values()))
        granularity = (
            existing[previous].granularity if incremental else (bitmaps.DEFAULT_GRANULARITY)
        )
        bitmaps.add_bitmap(image, new_gen, granularity)
        state.bitmaps[disk.disk_key] = new_gen
        state.images[disk.disk_key] = str(image)

        sock = socket_dir(work_dir, state) / f"disk-{disk.disk_key}.sock"
        argv = [
            self.qemu_nbd,
            "-r",
            "-f",
            "qcow2",
            "-x",
            "disk",
            "-t",
            "-e",
            str(self.connections),
            "-k",
            str(sock),
        ]
        if incremental:
            argv += ["-B", str(previous)]
        argv.append(str(image))
        log_path = work_dir / f"qemu-nbd-{disk.disk_key}.log"
        pid, start = processes.spawn(argv, log_path=log_path, env=self.env)
        state.servers.append({"disk_key": disk.disk_key, "pid": pid, "start": start})
        wait_socket(sock, pid, start, log_path, f"qemu-nbd for disk {disk.disk_key}")
        private_socket(sock)
        log.info(
            "lab disk served",
            vm_id=vm_id,
            disk_key=disk.disk_key,
            socket=str(sock),
            mode="incremental" if incremental else "full",
            bitmap=previous,
            change_id=new_gen,
        )
        return PreparedDisk(
            disk_key=disk.disk_key,
            source=f"nbd+unix:///disk?socket={sock}",
            mode="incremental" if incremental else "full",
            change_id=new_gen,
            dirty_bitmap=previous if incremental else None,
            note=note,
        )

    def finish(self, state: SourceState, *, success: bool) -> None:
        """Stop the qemu-nbd servers; after success drop the generations before the new one."""
        stop_servers(state)
        for name in state.files:  # a short link to the job directory for long socket paths
            Path(name).unlink(missing_ok=True)
        if not success:
            return
        for disk_key, new_gen in state.bitmaps.items():
            image = Path(state.images[disk_key])
            removed = bitmaps.prune_older(image, new_gen)
            log.info("bitmaps pruned", disk_key=disk_key, kept=new_gen, removed=removed)
