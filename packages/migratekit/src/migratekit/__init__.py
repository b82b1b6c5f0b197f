"""migratekit — the data mover of OSSEA-Migrate.

Copies VM disks between NBD exports: full copies from the source's allocation map,
incremental copies of exactly the changed extents (an extent list or a QEMU dirty bitmap),
pipelined over one or more connections, flushed, optionally verified, with progress posted
to the VMA. The command line is ``migratekit copy`` and ``migratekit run``.

Names are loaded on first use (PEP 562), so ``import migratekit.cli`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "CopyError": ".errors",
    "CopyOptions": ".copy",
    "DiskResult": ".copy",
    "DiskSpec": ".copy",
    "MigrateKitError": ".errors",
    "NbdClient": ".nbd",
    "NbdCommandError": ".errors",
    "NbdConnectionError": ".errors",
    "NbdError": ".errors",
    "NbdHandshakeError": ".errors",
    "NbdProtocolError": ".errors",
    "NbdUri": ".nbd",
    "Plan": "._plan",
    "TargetTooSmallError": ".errors",
    "UsageError": ".errors",
    "VerifyError": ".errors",
    "copy_disk": ".copy",
    "load_plan": "._plan",
    "parse_plan": "._plan",
    "parse_uri": ".nbd",
}

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


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read lazily: importlib.metadata costs ~70 ms at start-up
        from importlib.metadata import version

        return version("migratekit")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'migratekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
