"""vma — the VMware Migration Appliance services of OSSEA-Migrate."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read once, when asked: importlib.metadata costs ~90 ms
        from importlib.metadata import version

        value = globals()["__version__"] = version("vma")
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
