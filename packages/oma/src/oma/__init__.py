"""oma — the OSSEA Migration Appliance control plane of OSSEA-Migrate."""

from __future__ import annotations

from importlib.metadata import version as _version

__version__ = _version("oma")
