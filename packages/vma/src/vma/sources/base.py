"""The disk-source interface shared by the lab source and the vSphere source."""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import SourceError
from ..services import processes


@dataclass(frozen=True)
class DiskRequest:
    """One disk the job must sync: its key and the change ID of the last completed sync."""

    disk_key: str
    previous_change_id: str | None = None


@dataclass
class PreparedDisk:
    """What migratekit needs for one disk (one entry of the plan's ``disks``)."""

    disk_key: str
    source: str
    mode: str  # "full" | "incremental"
    change_id: str | None
    dirty_bitmap: str | None = None
    changed_extents_file: str | None = None
    note: str | None = None  # why a full copy was chosen although a change ID was given

    def plan_entry(self, target: str, target_is_zero: bool) -> dict[str, Any]:
        """This disk as an entry of the migratekit plan JSON."""
        return {
            "disk_key": self.disk_key,
            "source": self.source,
            "target": target,
            "mode": self.mode,
            "target_is_zero": target_is_zero,
            "changed_extents": None,
            "changed_extents_file": self.changed_extents_file,
            "dirty_bitmap": self.dirty_bitmap,
            "change_id": self.change_id,
        }


@dataclass
class SourceState:
    """What a prepared source owns; stored with the job so a restarted VMA can clean it up."""

    kind: str
    servers: list[dict[str, Any]] = field(default_factory=list)  # {disk_key, pid, start}
    bitmaps: dict[str, str] = field(default_factory=dict)  # disk_key -> new generation
    images: dict[str, str] = field(default_factory=dict)  # disk_key -> image path
    files: list[str] = field(default_factory=list)  # secret/extent files to delete

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceState:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


class DiskSource(Protocol):
    """Serves a VM's disks for one job and finds their changed blocks."""

    kind: str

    def prepare(
        self, vm: dict[str, Any], snapshot_id: str, disks: Sequence[DiskRequest], work_dir: Path
    ) -> tuple[list[PreparedDisk], SourceState]:
        """Start the per-disk servers and decide full/incremental per disk."""

    def finish(self, state: SourceState, *, success: bool) -> None:
        """Stop what :meth:`prepare` started; on success commit the new change tracking state."""


#: sun_path holds 108 bytes with its terminating NUL.
MAX_SOCKET_PATH = 107


def socket_dir(work_dir: Path, state: SourceState) -> Path:
    """Where the per-disk sockets go: the job directory (made 0700: only the VMA's user
    reaches them), or, when its path is too long for a unix socket, a short symbolic link to it
    in the temporary directory (removed with the job's files)."""
    os.chmod(work_dir, 0o700)
    if len(str(work_dir / "vddk-0000000000.sock")) <= MAX_SOCKET_PATH:
        return work_dir
    while True:
        link = Path(tempfile.gettempdir()) / f"vma-{secrets.token_hex(6)}"
        try:
            link.symlink_to(work_dir.resolve(), target_is_directory=True)
        except FileExistsError:
            continue
        state.files.append(str(link))
        return link


def private_socket(path: Path) -> None:
    """Make a disk server's unix socket 0600 (it sits in the job's 0700 directory)."""
    try:
        os.chmod(path, 0o600)
    except OSError as exc:
        raise SourceError(f"cannot restrict {path}: {exc.strerror}") from exc


def stop_servers(state: SourceState, grace: float = 5.0) -> None:
    """Stop every server process recorded in ``state`` (by PID and start time)."""
    for server in state.servers:
        processes.stop(server.get("pid"), server.get("start"), grace=grace)


def wait_socket(
    path: Path, pid: int, start: int, log: Path, what: str, timeout: float = 60.0
) -> None:
    """Wait until the unix socket ``path`` exists; SourceError if the server died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if not processes.alive(pid, start):
            tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
            raise SourceError(f"{what} exited before serving: {tail.strip()}")
        time.sleep(0.05)
    raise SourceError(f"{what} did not create {path} within {timeout:.0f}s")
