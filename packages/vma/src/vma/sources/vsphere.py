"""The production disk source: vSphere disks through nbdkit's VDDK plugin, changes from CBT.

Per disk: one ``nbdkit vddk`` process (read-only, unix socket 0600 in the job's 0700 directory,
so only this job's migratekit reaches it) opened on
the job's snapshot; the vCenter password reaches nbdkit as ``password=+FILE`` (a 0600 file in
the job directory, deleted when the job ends), never on its command line, and vCenter's
certificate is pinned with ``thumbprint=`` (learnt by :meth:`VSphereClient.server_thumbprint`
over a connection verified as the VMA's own). The plugin is ``vddk`` unless configured otherwise
(``plugin``: the words nbdkit gets in its place, e.g. the lab's stand-in
``python tools/vddk/plugin.py``); nothing else in the command changes. Changed blocks come
from ``QueryChangedDiskAreas`` (paged to the end of the disk by
:meth:`vma.vmware.VSphereClient.query_changed_areas`) and are written to a per-disk extents file
that migratekit reads (``changed_extents_file``). A full copy is migratekit's full mode (the
source's allocation map, holes written as zeroes), which is right for a reused target too. The
change ID reported is the snapshot's ``changeId`` for the disk.

In the lab it runs against vcsim with the VDDK stand-in of tools/vddk, which checks these
parameters as VDDK would and serves the lab VM's disk images.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from migration_common import get_logger

from ..errors import SourceError, VmwareError
from ..services import processes
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


class CbtClient(Protocol):
    """The part of VSphereClient this source uses."""

    def disk_change_ids(self, vm_id: str, snapshot_id: str) -> dict[str, str | None]: ...

    def query_changed_areas(
        self, vm_id: str, snapshot_id: str, disk_key: str, change_id: str
    ) -> list[tuple[int, int]]: ...


def write_extents(path: Path, extents: Sequence[tuple[int, int]]) -> None:
    """Write extents as the JSON list of ``{"start", "length"}`` objects migratekit reads."""
    path.write_text(json.dumps([{"start": int(s), "length": int(n)} for s, n in extents]))


def vddk_argv(
    *,
    nbdkit: str,
    libdir: str,
    server: str,
    port: int = 443,
    user: str,
    password_file: Path,
    thumbprint: str | None,
    vm_moref: str,
    snapshot_id: str,
    vmdk_path: str,
    socket_path: Path,
    plugin: Sequence[str] = ("vddk",),
) -> list[str]:
    """The nbdkit command serving one snapshot disk read-only over a unix socket
    (``port=`` only when vCenter is not on 443)."""
    argv = [
        nbdkit,
        "--readonly",
        "--foreground",
        "-U",
        str(socket_path),
        *plugin,
        f"libdir={libdir}",
        f"server={server}",
        *([f"port={port}"] if port != 443 else []),
        f"user={user}",
        f"password=+{password_file}",
        f"vm=moref={vm_moref}",
        f"snapshot={snapshot_id}",
        f"file={vmdk_path}",
        "transports=nbdssl:nbd",
    ]
    if thumbprint:
        argv.append(f"thumbprint={thumbprint}")
    return argv


def kept_alive(argv: list[str], work_dir: Path, disk_key: str) -> list[str]:
    """``argv`` run under :mod:`vma.services.supervise`, which stays its parent.

    nbdkit 1.32 always asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``
    in server/main.c, with or without ``--exit-with-parent``), and for a multi-threaded parent
    that is the thread that started it: the VMA starts disk servers from short-lived job
    threads, and a restarted VMA must find them still serving."""
    return [
        sys.executable,
        "-m",
        "vma.services.supervise",
        str(work_dir / f"nbdkit-{disk_key}.exit.json"),
        str(work_dir / f"nbdkit-{disk_key}.pid.json"),
        "--",
        *argv,
    ]


class VSphereSource:
    """Serves vSphere snapshot disks with nbdkit-vddk and plans from CBT."""

    kind = "vsphere"

    def __init__(
        self,
        client: CbtClient,
        *,
        server: str,
        user: str,
        password: str,
        env: Mapping[str, str],
        port: int = 443,
        libdir: str = "/usr/lib/vmware-vix-disklib",
        thumbprint: str | None = None,
        nbdkit: str = "nbdkit",
        plugin: Sequence[str] = ("vddk",),
    ) -> None:
        self.client = client
        self.server, self.port, self.user, self._password = server, port, user, password
        self.env, self.libdir, self.thumbprint, self.nbdkit = dict(env), libdir, thumbprint, nbdkit
        self.plugin = tuple(plugin)

    def plan_disk(
        self,
        vm: dict[str, Any],
        snapshot_id: str,
        disk: DiskRequest,
        change_ids: Mapping[str, str | None],
        work_dir: Path,
    ) -> PreparedDisk:
        """Decide full/incremental for one disk and write its extents file (no process)."""
        vm_id = vm["id"]
        new_id = change_ids.get(disk.disk_key)
        extents_file = work_dir / f"extents-{disk.disk_key}.json"
        previous = disk.previous_change_id or None
        note = None
        if previous and new_id:
            try:
                extents = self.client.query_changed_areas(
                    vm_id, snapshot_id, disk.disk_key, previous
                )
                write_extents(extents_file, extents)
                return PreparedDisk(
                    disk.disk_key, "", "incremental", new_id, changed_extents_file=str(extents_file)
                )
            except VmwareError as exc:  # e.g. FileFault after a CBT reset
                note = f"changed areas since {previous!r} unavailable ({exc}): full copy"
        elif previous:
            note = "CBT is off on this VM: full copy"
        if previous:
            log.warning(
                "falling back to full copy", vm_id=vm_id, disk_key=disk.disk_key, reason=note
            )
        # A full copy walks the source's allocation map and writes zeroes over every hole, so a
        # reused replica that is not zero ends identical. (Copying only CBT's "*" areas would
        # leave the old bytes of a reused target in the unallocated areas.) The snapshot's change
        # ID, when CBT is on, is the base of the next incremental.
        return PreparedDisk(disk.disk_key, "", "full", new_id, note=note)

    def prepare(
        self, vm: dict[str, Any], snapshot_id: str, disks: Sequence[DiskRequest], work_dir: Path
    ) -> tuple[list[PreparedDisk], SourceState]:
        """Plan every disk from CBT and start one nbdkit-vddk per disk."""
        if not vm.get("moref"):
            raise SourceError(f"VM {vm['id']} has no managed object reference for VDDK")
        state = SourceState(kind=self.kind)
        password_file = work_dir / "vcenter-password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self._password)
        state.files.append(str(password_file))
        change_ids = self.client.disk_change_ids(vm["id"], snapshot_id)
        paths = {d["key"]: d.get("vmdk_path") for d in vm.get("disks", [])}
        prepared = []
        try:
            sockets = socket_dir(work_dir, state)
            for disk in disks:
                entry = self.plan_disk(vm, snapshot_id, disk, change_ids, work_dir)
                sock = sockets / f"vddk-{disk.disk_key}.sock"
                argv = vddk_argv(
                    nbdkit=self.nbdkit,
                    libdir=self.libdir,
                    server=self.server,
                    port=self.port,
                    user=self.user,
                    password_file=password_file,
                    thumbprint=self.thumbprint,
                    vm_moref=vm["moref"],
                    snapshot_id=snapshot_id,
                    vmdk_path=paths[disk.disk_key] or "",
                    socket_path=sock,
                    plugin=self.plugin,
                )
                log_path = work_dir / f"nbdkit-{disk.disk_key}.log"
                argv = kept_alive(argv, work_dir, disk.disk_key)
                pid, start = processes.spawn(argv, log_path=log_path, env=self.env)
                state.servers.append({"disk_key": disk.disk_key, "pid": pid, "start": start})
                wait_socket(sock, pid, start, log_path, f"nbdkit-vddk for disk {disk.disk_key}")
                private_socket(sock)
                entry.source = f"nbd+unix:///?socket={sock}"
                prepared.append(entry)
        except BaseException:
            self.finish(state, success=False)
            raise
        return prepared, state

    def finish(self, state: SourceState, *, success: bool) -> None:
        """Stop nbdkit, delete the password file and the socket directory's link."""
        stop_servers(state)
        for name in state.files:
            Path(name).unlink(missing_ok=True)
