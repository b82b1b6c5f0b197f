"""``GET /api/v1/health`` (no token needed) and ``GET /api/v1/openapi.json``."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint

from vma.services.store import Job

from ..openapi import document
from ._services import services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> dict[str, Any]:
    """Liveness plus job counts."""
    import vma_api_server

    counts = {s: Job.select().where(Job.status == s).count() for s in ("queued", "running")}
    return {
        "status": "ok",
        "version": vma_api_server.__version__,
        "uptime_s": round(time.monotonic() - services().started, 3),
        "jobs": counts,
    }


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API."""
    return document()
