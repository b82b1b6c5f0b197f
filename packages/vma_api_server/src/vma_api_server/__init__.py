"""vma_api_server — the VMA HTTP API of OSSEA-Migrate (Flask app factory + gunicorn launcher)."""

from __future__ import annotations

from typing import Any

from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read once, when asked: importlib.metadata costs ~90 ms
        from importlib.metadata import version

        value = globals()["__version__"] = version("vma-api-server")
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
