"""vma — the VMware Migration Appliance services of OSSEA-Migrate."""

from __future__ import annotations

from importlib.metadata import version as _version

__version__ = _version("vma")
