"""The VMA API's blueprints, one per resource, all under ``/api/v1``."""

from __future__ import annotations

from flask import Flask

from . import health, jobs, progress, vms


def register_blueprints(app: Flask) -> None:
    """Attach every blueprint to ``app``."""
    for module in (health, vms, jobs, progress):
        app.register_blueprint(module.bp, url_prefix="/api/v1")
