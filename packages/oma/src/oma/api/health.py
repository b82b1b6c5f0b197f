"""Health: database reachability and the worker's last heartbeat (no token needed)."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint, jsonify

import oma

from ..database import database
from ..database.fields import now
from ..database.models import HealthProbe
from ..database.repos import heartbeats
from ._context import config
from .serialize import ts

bp = Blueprint("health", __name__)

PROBE_EVERY = 5.0  # seconds between write probes in one process
_probe: dict[str, Any] = {"at": -PROBE_EVERY, "error": None}
_probe_lock = threading.Lock()


def _write_refused() -> str | None:
    """Why the database refuses a write (read-only, full, ...), or None when it accepts one.

    The probe commits one row (``health_probe``) at most every PROBE_EVERY seconds per
    process; between probes the last answer stands.
    """
    with _probe_lock:
        if time.monotonic() - _probe["at"] < PROBE_EVERY:
            return _probe["error"]
        _probe["at"] = time.monotonic()
    try:
        with database.atomic():
            updated = HealthProbe.update(checked_at=now()).where(HealthProbe.id == 1).execute()
            if not updated:
                HealthProbe.insert(id=1, checked_at=now()).on_conflict_ignore().execute()
        error = None
    except Exception as exc:  # any driver error: the write did not happen
        error = f"{type(exc).__name__}: {str(exc)[:160]}"
    _probe["error"] = error
    return error


@bp.get("/health")
@bp.get("/api/v1/health")
def health() -> Any:
    """Database and worker status; 200 when the database answers and accepts writes, else 503.

    ``status`` is ``ok`` with a live worker, ``degraded`` when no worker heartbeat arrived
    within three poll intervals (jobs will not progress), ``error`` without a database.
    """
    body: dict[str, Any] = {"service": "oma", "version": oma.__version__}
    try:
        database.execute_sql("SELECT 1")
        beat = heartbeats.latest()
    except Exception as exc:  # any driver error means "database unavailable"
        body.update(
            status="error", database={"ok": False, "error": type(exc).__name__}, worker=None
        )
        return jsonify(body), 503
    refused = _write_refused()
    if refused:
        body.update(
            status="error",
            database={"ok": False, "writable": False, "error": refused},
            worker=None,
        )
        return jsonify(body), 503
    body["database"] = {"ok": True, "writable": True}
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
