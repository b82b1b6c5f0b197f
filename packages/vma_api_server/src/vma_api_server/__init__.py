"""vma_api_server — the VMA HTTP API of OSSEA-Migrate (Flask app factory + gunicorn launcher)."""

from __future__ import annotations

from importlib.metadata import version as _version

from .app import create_app

__version__ = _version("vma-api-server")

__all__ = ["create_app"]
