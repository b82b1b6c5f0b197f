"""vma_api_server — the VMA HTTP API of OSSEA-Migrate."""

from __future__ import annotations

from importlib.metadata import version as _version

__version__ = _version("vma-api-server")
