"""Bandwidth limits: global, per VMA and per replication job, with time windows.

Each scope holds at most one policy, ``{"rate_bps", "timezone", "windows"}``
(:mod:`oma.services.bandwidth`), replaced as a whole by ``PUT`` and removed by ``DELETE``.
Rates are bytes per second; null is unlimited. ``oma worker`` pushes every running job's
effective limit to its VMA when it changes (edits, window boundaries, jobs starting or
ending), and migratekit applies it within one progress interval.
"""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, g, jsonify, request
from pydantic import AfterValidator, Field

from migration_common import utcnow

from ..database.models import JobStatus, ReplicationJob
from ..database.repos import appliances, jobs
from ..database.repos import bandwidth as repo
from ..errors import ConflictError
from ..services.bandwidth import (
    DAY_PATTERN,
    MAX_RATE,
    MAX_WINDOWS,
    TIME_PATTERN,
    Policy,
    PolicyError,
    check_day,
    check_time,
    effective_limits,
    parse_policy,
)
from .errors import ApiError
from .requests import Body, body, int_between, line, unprocessable

bp = Blueprint("bandwidth", __name__)


def _checked(check: Any, pattern: str) -> Any:
    """A string documented with ``pattern`` and checked by ``check`` (a clear message)."""
    return Annotated[str, Field(json_schema_extra={"pattern": pattern}), AfterValidator(check)]


Rate = Annotated[
    int_between(0, MAX_RATE) | None,
    Field(description="bytes per second; null (or 0): unlimited"),
]


class WindowIn(Body):
    """A time window: on ``days``, from ``start`` to ``end`` (local time), ``rate_bps``."""

    days: Annotated[
        list[_checked(check_day, DAY_PATTERN)],
        Field(min_length=1, max_length=7, description='e.g. ["mon-fri"] or ["sat", "sun"]'),
    ]
    start: _checked(check_time, TIME_PATTERN)
    end: Annotated[_checked(check_time, TIME_PATTERN), Field(description="after start")]
    rate_bps: Rate


class PolicyIn(Body):
    """A bandwidth policy: ``rate_bps`` outside the windows, the first matching window's
    rate inside one, evaluated in ``timezone`` (IANA, default UTC)."""

    rate_bps: Rate = None
    timezone: line(64) | None = None
    windows: Annotated[list[WindowIn], Field(max_length=MAX_WINDOWS)] | None = None


def _policy_from_body() -> Policy:
    """The validated body as a Policy; 422 naming the field for what the schema cannot say
    (an unknown timezone, an end not after its start). A PUT replaces the whole policy, so it
    needs a body (``{}`` for "unlimited", stated)."""
    if not request.get_data().strip():
        raise ApiError("invalid_json", "the request body must be a JSON object", 400)
    try:
        return parse_policy(g.body.model_dump())
    except PolicyError as exc:
        raise unprocessable(exc.field, exc.message) from None


def _document(scope: str, owner_id: str | None) -> dict[str, Any]:
    policy = repo.get_policy(scope, owner_id)
    return {
        "scope": scope,
        "id": owner_id,
        "policy": policy.to_dict() if policy else None,
        "rate_now_bps": policy.rate_at(utcnow()) if policy else None,
    }


def _running() -> dict[str, str | None]:
    rows = ReplicationJob.select(ReplicationJob.id, ReplicationJob.vma).where(
        ReplicationJob.status == JobStatus.REPLICATING.value
    )
    return {r.id: r.vma_id for r in rows}


# -- global ---------------------------------------------------------------------------------


@bp.get("/api/v1/bandwidth")
def get_global() -> Any:
    """The global bandwidth policy (shared evenly by all running jobs) and its rate now."""
    return jsonify(_document(repo.GLOBAL, None))


@bp.put("/api/v1/bandwidth")
@body(PolicyIn)
def put_global() -> Any:
    """Replace the global policy: ``{"rate_bps"?, "timezone"?, "windows"?: [{"days",
    "start", "end", "rate_bps"}]}``; 400 naming the field for a negative rate, an unknown
    day or a time that is not HH:MM, 422 for an unknown timezone or an end not after its
    start."""
    repo.set_policy(repo.GLOBAL, None, _policy_from_body())
    return jsonify(_document(repo.GLOBAL, None))


@bp.delete("/api/v1/bandwidth")
def delete_global() -> Any:
    """Remove the global policy (no global limit)."""
    repo.delete_policy(repo.GLOBAL)
    return "", 204


# -- per VMA ---------------------------------------------------------------------------------


@bp.get("/api/v1/vma-appliances/<appliance_id>/bandwidth")
def get_vma(appliance_id: str) -> Any:
    """The VMA's bandwidth policy (shared evenly by its running jobs) and its rate now."""
    appliances.get_appliance(appliance_id)
    return jsonify(_document("vma", appliance_id))


@bp.put("/api/v1/vma-appliances/<appliance_id>/bandwidth")
@body(PolicyIn)
def put_vma(appliance_id: str) -> Any:
    """Replace the VMA's policy (same body as the global one)."""
    appliances.get_appliance(appliance_id)
    repo.set_policy("vma", appliance_id, _policy_from_body())
    return jsonify(_document("vma", appliance_id))


@bp.delete("/api/v1/vma-appliances/<appliance_id>/bandwidth")
def delete_vma(appliance_id: str) -> Any:
    """Remove the VMA's policy."""
    appliances.get_appliance(appliance_id)
    repo.delete_policy("vma", appliance_id)
    return "", 204


# -- per job ---------------------------------------------------------------------------------


@bp.get("/api/v1/replications/<job_id>/bandwidth")
def get_job(job_id: str) -> Any:
    """The job's own policy and, while it replicates, its effective limit now: the smallest
    of its own rate, its share of its VMA's and its share of the global rate."""
    job = jobs.get_job(job_id)
    doc = _document("job", job_id)
    doc["effective"] = None
    if job.status == JobStatus.REPLICATING.value:
        glob, vmas, own = repo.all_policies()
        limits = effective_limits(
            utcnow(), _running(), global_policy=glob, vma_policies=vmas, job_policies=own
        )
        if job_id in limits:
            doc["effective"] = limits[job_id].to_dict()
    return jsonify(doc)


@bp.put("/api/v1/replications/<job_id>/bandwidth")
@body(PolicyIn)
def put_job(job_id: str) -> Any:
    """Replace the job's own policy (same body as the global one); 409 once it ended."""
    job = jobs.get_job(job_id)
    if JobStatus(job.status).is_terminal:
        raise ConflictError(f"job {job_id} is {job.status}: no limit to change", field="job_id")
    repo.set_policy("job", job_id, _policy_from_body())
    return get_job(job_id)


@bp.delete("/api/v1/replications/<job_id>/bandwidth")
def delete_job(job_id: str) -> Any:
    """Remove the job's own policy (the VMA and global limits still apply)."""
    jobs.get_job(job_id)
    repo.delete_policy("job", job_id)
    return "", 204
