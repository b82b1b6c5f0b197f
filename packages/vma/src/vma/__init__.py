"""vma — the VMware Migration Appliance services of OSSEA-Migrate."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read lazily: importlib.metadata costs ~90 ms at start-up
        from importlib.metadata import version

        return version("vma")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
