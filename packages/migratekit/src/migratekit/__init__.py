"""migratekit — the data mover of OSSEA-Migrate.

Copies VM disks between NBD exports: full copies from the source's allocation map,
incremental copies of exactly the changed extents (an extent list or a QEMU dirty bitmap),
pipelined over one or more connections, flushed, optionally verified, with progress posted
to the VMA. The command line is ``migratekit copy`` and ``migratekit run``.
"""

from __future__ import annotations

from ._plan import Plan, load_plan, parse_plan
from .copy import CopyOptions, DiskResult, DiskSpec, copy_disk
from .errors import (
    CopyError,
    MigrateKitError,
    NbdCommandError,
    NbdConnectionError,
    NbdError,
    NbdHandshakeError,
    NbdProtocolError,
    TargetTooSmallError,
    UsageError,
    VerifyError,
)
from .nbd import NbdClient, NbdUri, parse_uri

__all__ = [
    "CopyError",
    "CopyOptions",
    "DiskResult",
    "DiskSpec",
    "MigrateKitError",
    "NbdClient",
    "NbdCommandError",
    "NbdConnectionError",
    "NbdError",
    "NbdHandshakeError",
    "NbdProtocolError",
    "NbdUri",
    "Plan",
    "TargetTooSmallError",
    "UsageError",
    "VerifyError",
    "copy_disk",
    "load_plan",
    "parse_plan",
    "parse_uri",
]
