"""Progress of jobs, read from the database (the worker's poller writes it)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from ..database.models import ReplicationJob
from ..database.repos import jobs
from .errors import invalid
from .serialize import progress

bp = Blueprint("progress", __name__, url_prefix="/api/v1/progress")


@bp.get("/<job_id>")
def job_progress(job_id: str) -> Any:
    """One job's progress in the contract's shape (docs/architecture.md §3)."""
    row = jobs.get_job(job_id)
    return jsonify(progress(row, jobs.list_job_disks(job_id)))


@bp.get("")
def batch_progress() -> Any:
    """``?job_ids=a,b`` → ``{"jobs": [...], "not_found": [...]}`` (at most 500 ids)."""
    ids = [i for i in (request.args.get("job_ids") or "").split(",") if i]
    if not ids:
        raise invalid("job_ids", "is required (comma-separated job ids)")
    if len(ids) > 500:
        raise invalid("job_ids", "at most 500 ids per request")
    rows = {r.id: r for r in ReplicationJob.select().where(ReplicationJob.id.in_(ids))}
    disks = jobs.job_disks_by_job(rows)
    return jsonify(
        {
            "jobs": [progress(rows[i], disks[i]) for i in ids if i in rows],
            "not_found": [i for i in ids if i not in rows],
        }
    )
