"""Progress of jobs, read from the database (the worker's poller writes it)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify
from pydantic import Field

from ..database.models import ReplicationJob
from ..database.repos import jobs
from .requests import Query, query
from .serialize import progress

bp = Blueprint("progress", __name__, url_prefix="/api/v1/progress")


@bp.get("/<job_id>")
def job_progress(job_id: str) -> Any:
    """One job's progress in the contract's shape (docs/architecture.md §3)."""
    row = jobs.get_job(job_id)
    return jsonify(progress(row, jobs.list_job_disks(job_id)))


_ID = "[^,\\x00-\\x20\\x7f-\\xa0]{1,64}"


class ProgressQuery(Query):
    """``GET /progress``: the jobs to report."""

    job_ids: str = Field(
        pattern=f"^{_ID}(,{_ID}){{0,499}}$",
        description="comma-separated job ids (at most 500)",
    )


@bp.get("")
@query(ProgressQuery)
def batch_progress() -> Any:
    """``?job_ids=a,b`` → ``{"jobs": [...], "not_found": [...]}`` (at most 500 ids)."""
    ids = g.query.job_ids.split(",")
    rows = {r.id: r for r in ReplicationJob.select().where(ReplicationJob.id.in_(ids))}
    disks = jobs.job_disks_by_job(rows)
    return jsonify(
        {
            "jobs": [progress(rows[i], disks[i]) for i in ids if i in rows],
            "not_found": [i for i in ids if i not in rows],
        }
    )
