"""Health: database reachability and the worker's last heartbeat (no token needed)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..database import database
from ..database.fields import now
from ..database.repos import heartbeats
from ._context import config
from .serialize import ts

bp = Blueprint("health", __name__)


@bp.get("/health")
@bp.get("/api/v1/health")
def health() -> Any:
    """Database and worker status; 200 when the database answers, else 503.

    ``status`` is ``ok`` with a live worker, ``degraded`` when no worker heartbeat arrived
    within three poll intervals (jobs will not progress), ``error`` without a database.
    """
    from importlib.metadata import version

    body: dict[str, Any] = {"service": "oma", "version": version("oma")}
    try:
        database.execute_sql("SELECT 1")
        beat = heartbeats.latest()
    except Exception as exc:  # any driver error means "database unavailable"
        body.update(
            status="error", database={"ok": False, "error": type(exc).__name__}, worker=None
        )
        return jsonify(body), 503
    body["database"] = {"ok": True}
    if beat is None:
        body["worker"] = {"alive": False, "seen_at": None}
    else:
        age = (now() - beat.seen_at).total_seconds()
        alive = age <= max(3 * config().poll_interval, 15.0)
        body["worker"] = {
            "alive": alive,
            "worker_id": beat.worker_id,
            "seen_at": ts(beat.seen_at),
            "age_seconds": round(age, 1),
        }
    body["status"] = "ok" if body["worker"]["alive"] else "degraded"
    return jsonify(body), 200
