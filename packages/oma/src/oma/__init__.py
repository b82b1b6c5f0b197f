"""oma — the OSSEA Migration Appliance control plane of OSSEA-Migrate."""

from __future__ import annotations

from importlib.metadata import version as _version

from .sqlite_setup import disable_memory_statistics

disable_memory_statistics()  # before anything imports sqlite3 (see oma.sqlite_setup)

__version__ = _version("oma")
