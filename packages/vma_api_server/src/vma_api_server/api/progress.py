"""Progress: updates from migratekit in, job progress out (single and batched)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from vma.services.progress import apply_update, get_job, job_progress, jobs_progress

from ..errors import ApiError

bp = Blueprint("progress", __name__)

MAX_BATCH = 200


@bp.post("/progress/<job_id>/update")
def update(job_id: str) -> dict[str, Any]:
    """One disk's update (DiskProgress); stale ``seq`` and finished jobs are ignored (200)."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError("invalid_json", "request body must be a JSON object", 400)
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
    raw = request.args.get("job_ids")
    if raw is None:
        raise ApiError("invalid_field", "query parameter job_ids is required", 400, "job_ids")
    ids = list(dict.fromkeys(i.strip() for i in raw.split(",") if i.strip()))
    if len(ids) > MAX_BATCH:
        raise ApiError("invalid_field", f"at most {MAX_BATCH} job ids per request", 400, "job_ids")
    jobs, not_found = jobs_progress(ids)
    return {"jobs": [j.to_dict() for j in jobs], "not_found": not_found}
