"""Progress: updates from migratekit in, job progress out (single and batched)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from vma.services.progress import apply_update, get_job, job_progress, jobs_progress

from ..schemas import ProgressQuery, query_args, strict_json

bp = Blueprint("progress", __name__)


@bp.post("/progress/<job_id>/update")
def update(job_id: str) -> dict[str, Any]:
    """One disk's update (DiskProgress); stale ``seq`` and finished jobs are ignored (200)."""
    data = strict_json()
    get_job(job_id)  # 404 before validating the body
    accepted, reason = apply_update(job_id, data)
    return {"job_id": job_id, "accepted": accepted, "reason": reason}


@bp.get("/progress/<job_id>")
def single(job_id: str) -> dict[str, Any]:
    """One job's progress document."""
    return job_progress(get_job(job_id)).to_dict()


@bp.get("/progress")
def batch() -> dict[str, Any]:
    """``?job_ids=a,b,c`` → ``{"jobs": [...], "not_found": [...]}`` (never a 404 for the batch)."""
    ids = list(dict.fromkeys(query_args(ProgressQuery).job_ids.split(",")))
    jobs, not_found = jobs_progress(ids)
    return {"jobs": [j.to_dict() for j in jobs], "not_found": not_found}
