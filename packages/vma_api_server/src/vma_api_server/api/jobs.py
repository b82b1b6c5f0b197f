"""Replication jobs: ``POST /replicate``, ``GET /jobs[/{id}]``, ``POST /jobs/{id}/stop``,
``GET|PUT /jobs/{id}/bandwidth``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from migration_common import redact
from vma.services import bandwidth
from vma.services.progress import get_job, job_document
from vma.services.retention import dir_pruned
from vma.services.store import ACTIVE_STATUSES, Job

from ..errors import ApiError
from ..schemas import BandwidthIn, EmptyIn, JobsQuery, LogQuery, ReplicateIn, json_body, query_args
from ._services import services

bp = Blueprint("jobs", __name__)


@bp.post("/replicate")
def replicate() -> tuple[dict[str, Any], int]:
    """Queue a replication job (202). Same id + same body again → 202 with its current status.

    With ``resume_from_job`` the answer's ``resume`` says whether the full copy continues from
    that job's checkpoints (``resumed``, per-disk ``disks`` offsets) or why not (``reason``).
    """
    body = json_body(ReplicateIn)
    runner = services().runner
    job, _created = runner.submit(body.to_spec())
    answer: dict[str, Any] = {"job_id": job.job_id, "status": job.status}
    decision = runner.resume_document(job)
    if decision is not None:
        answer["resume"] = decision
    return answer, 202


@bp.get("/jobs")
def list_jobs() -> dict[str, Any]:
    """Jobs, newest first, without progress: ``?status=running&limit=100`` (limit ≤ 1000)."""
    args = query_args(JobsQuery)
    query = Job.select().order_by(Job.created_at.desc()).limit(args.limit)
    if args.status is not None:
        query = query.where(Job.status == args.status)
    return {
        "jobs": [
            {
                "job_id": j.job_id,
                "vm_id": j.vm_id,
                "status": j.status,
                "pid": j.pid,
                "error": j.error,
                "created_at": j.created_at,
                "finished_at": j.finished_at,
            }
            for j in query
        ]
    }


@bp.get("/jobs/<job_id>")
def get(job_id: str) -> dict[str, Any]:
    """The job record with its progress (and ``resume`` when it asked to resume)."""
    job = get_job(job_id)
    doc = job_document(job)
    decision = services().runner.resume_document(job)
    if decision is not None:
        doc["resume"] = decision
    return doc


@bp.get("/jobs/<job_id>/log")
def job_log(job_id: str) -> dict[str, Any]:
    """The end of the job's migratekit log: ``?tail_bytes=65536`` (≤ 1 MiB), redacted.

    410 ``log_pruned`` when the finished job's directory was removed by job retention.
    """
    job = get_job(job_id)
    tail = query_args(LogQuery).tail_bytes
    runner = services().runner
    if dir_pruned(job, runner.job_dir(job_id)):
        raise ApiError(
            "log_pruned",
            f"the log of job {job_id} is no longer available: its job directory was removed "
            f"(finished jobs keep theirs for VMA_JOB_RETENTION_DAYS="
            f"{runner.config.job_retention_days} days)",
            410,
            "job_id",
        )
    path = runner.job_dir(job_id) / "migratekit.log"
    size = path.stat().st_size if path.exists() else 0
    start = max(0, size - tail)
    text = ""
    if size:
        with path.open("rb") as fh:
            fh.seek(start)
            text = fh.read(tail).decode(errors="replace")
    return {"job_id": job_id, "log": redact(text), "truncated": start > 0, "size": size}


@bp.post("/jobs/<job_id>/stop")
def stop(job_id: str) -> dict[str, Any]:
    """Stop the job (SIGTERM, SIGKILL after the grace period, snapshot removed)."""
    json_body(EmptyIn, optional=True)
    return job_document(services().runner.stop(job_id))


@bp.get("/jobs/<job_id>/bandwidth")
def get_bandwidth(job_id: str) -> dict[str, Any]:
    """The job's bandwidth limit: ``{"job_id", "limit_bps" (null: unlimited), "updated_at"}``."""
    get_job(job_id)
    return {"job_id": job_id, **bandwidth.read_limit(services().runner.job_dir(job_id))}


@bp.put("/jobs/<job_id>/bandwidth")
def put_bandwidth(job_id: str) -> dict[str, Any]:
    """Set the job's bandwidth limit, ``{"limit_bps": N | null}`` (bytes/s; null or 0: none).

    A queued job starts with it; a running migratekit applies it within one progress
    interval. 409 ``job_finished`` for a job that is no longer queued or running.
    """
    body = json_body(BandwidthIn)
    job = get_job(job_id)
    if job.status not in ACTIVE_STATUSES:
        raise ApiError(
            "job_finished", f"job {job_id} is {job.status}: no limit to change", 409, "job_id"
        )
    doc = bandwidth.write_limit(services().runner.job_dir(job_id), body.limit_bps)
    return {"job_id": job_id, **doc}
