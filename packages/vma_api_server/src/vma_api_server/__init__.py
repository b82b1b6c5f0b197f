"""vma_api_server — the VMA HTTP API of OSSEA-Migrate (Flask app factory + gunicorn launcher)."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
