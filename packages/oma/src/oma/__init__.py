"""oma — the OSSEA Migration Appliance control plane of OSSEA-Migrate."""

from __future__ import annotations

from typing import Any

from .sqlite_setup import disable_memory_statistics

disable_memory_statistics()  # before anything imports sqlite3 (see oma.sqlite_setup)


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read once, when asked: importlib.metadata costs ~90 ms
        from importlib.metadata import version

        value = globals()["__version__"] = version("oma")
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
