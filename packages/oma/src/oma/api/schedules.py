"""Schedules (5-field cron + IANA timezone, for one VM or a group), run-now, and their runs.

``oma worker`` fires due schedules (:mod:`oma.services.schedules`); ``run-now`` fires one at
once. Each run records per VM whether a job was created or why it was skipped, then the
job's outcome.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for

from migration_common import utcnow

from ..database.models import (
    MachineGroup,
    ReplicationJob,
    RequestedType,
    Schedule,
    ScheduleRun,
    ScheduleRunVm,
    VmContext,
)
from ..database.repos import schedules as repo
from ..services import cron
from ..services.schedules import run_now
from .errors import invalid
from .schemas import SCHEDULE_CREATE, SCHEDULE_PATCH, body
from .serialize import ts
from .validation import boolean, choice, json_body, no_unknown, page, string

bp = Blueprint("schedules", __name__, url_prefix="/api/v1/schedules")

FIELDS = ("name", "cron", "timezone", "enabled", "skip_if_running", "type")


def _fields(data: dict[str, Any], current: Schedule | None = None) -> dict[str, Any]:
    """Validated columns from a create (``current`` None) or patch body."""
    fields: dict[str, Any] = {}
    if current is None or "name" in data:
        fields["name"] = string(data, "name", max_length=100)
    if current is None or "cron" in data:
        fields["cron"] = string(data, "cron", max_length=100)
    if "timezone" in data:
        fields["timezone"] = string(data, "timezone", max_length=64)
    try:
        zone = fields.get("timezone") or (current.timezone if current else "UTC")
        cron.timezone(zone)
    except ValueError as exc:
        raise invalid("timezone", str(exc)) from None
    expression = fields.get("cron") or (current.cron if current else "")
    try:
        fields["cron"] = cron.parse(expression, zone).expression
    except ValueError as exc:
        raise invalid("cron", str(exc)) from None
    for name in ("enabled", "skip_if_running"):
        if name in data:
            fields[name] = boolean(data, name)
    if "type" in data:
        fields["replication_type"] = choice(data, "type", RequestedType).value
    return fields


def _target(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(context id, group id): exactly one, and it must exist (400 naming the field)."""
    context_id = string(data, "vm_context_id", required=False, max_length=36)
    group_id = string(data, "group_id", required=False, max_length=36)
    if bool(context_id) == bool(group_id):
        raise invalid("vm_context_id", "give exactly one of vm_context_id or group_id")
    if context_id and VmContext.get_or_none(VmContext.id == context_id) is None:
        raise invalid("vm_context_id", f"unknown VM context {context_id}")
    if group_id and MachineGroup.get_or_none(MachineGroup.id == group_id) is None:
        raise invalid("group_id", f"unknown group {group_id}")
    return context_id, group_id


def schedule_json(row: Schedule) -> dict[str, Any]:
    """A schedule with its target and next occurrence (None while disabled)."""
    target: dict[str, Any]
    if row.context_id:
        ctx = VmContext.get_or_none(VmContext.id == row.context_id)
        target = {"kind": "vm", "id": row.context_id, "name": ctx.name if ctx else None}
    else:
        group = MachineGroup.get_or_none(MachineGroup.id == row.group_id)
        target = {"kind": "group", "id": row.group_id, "name": group.name if group else None}
    next_run = None
    if row.enabled:
        try:
            next_run = cron.parse(row.cron, row.timezone).next_after(utcnow())
        except ValueError:  # a timezone this host no longer knows
            next_run = None
    last = (
        ScheduleRun.select()
        .where(ScheduleRun.schedule == row.id)
        .order_by(ScheduleRun.started_at.desc())
        .first()
    )
    return {
        "id": row.id,
        "name": row.name,
        "cron": row.cron,
        "timezone": row.timezone,
        "enabled": row.enabled,
        "skip_if_running": row.skip_if_running,
        "type": row.replication_type,
        "target": target,
        "next_run_at": ts(next_run),
        "last_run": run_json(last) if last else None,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
    }


def run_json(run: ScheduleRun, *, vms: list[ScheduleRunVm] | None = None) -> dict[str, Any]:
    """A run's counts; with ``vms``, what it did per VM (live job status until settled)."""
    data: dict[str, Any] = {
        "id": run.id,
        "schedule_id": run.schedule_id,
        "occurrence": ts(run.occurrence),
        "trigger": run.trigger,
        "started_at": ts(run.started_at),
        "finished_at": ts(run.finished_at),
        "eligible": run.eligible,
        "created": run.created,
        "skipped": run.skipped,
    }
    if vms is None:
        return data
    ids = [v.job_id for v in vms if v.job_id]
    status = (
        {
            j.id: j.status
            for j in ReplicationJob.select(ReplicationJob.id, ReplicationJob.status).where(
                ReplicationJob.id.in_(ids)
            )
        }
        if ids
        else {}
    )
    data["vms"] = [
        {
            "vm_context_id": v.context_id,
            "vm_name": v.vm_name,
            "result": v.result,
            "reason": v.reason,
            "job_id": v.job_id,
            "job_status": status.get(v.job_id) if v.job_id else None,
            "outcome": v.outcome,
            "outcome_message": v.outcome_message,
            "finished_at": ts(v.finished_at),
        }
        for v in vms
    ]
    return data


@bp.get("")
def list_schedules() -> Any:
    """Schedules by name, each with its next occurrence and last run."""
    return jsonify({"items": [schedule_json(s) for s in repo.list_schedules()]})


@bp.post("")
@body(SCHEDULE_CREATE)
def create_schedule() -> Any:
    """Create a schedule: ``{"name", "cron" (5 fields), "timezone"? (IANA, default UTC),
    "vm_context_id" | "group_id", "enabled"?, "skip_if_running"? (default true: a VM with an
    active job is skipped; false: its job starts once that one ends), "type"?}`` → 201;
    400 naming the field for a bad cron, an unknown timezone, VM or group."""
    data = json_body()
    no_unknown(data, (*FIELDS, "vm_context_id", "group_id"))
    fields = _fields(data)
    context_id, group_id = _target(data)
    row = repo.create_schedule(
        fields.pop("name"), fields.pop("cron"), context_id=context_id, group_id=group_id, **fields
    )
    response = jsonify(schedule_json(row))
    response.headers["Location"] = url_for(".get_schedule", schedule_id=row.id)
    return response, 201


@bp.get("/runs")
def list_runs() -> Any:
    """Runs of every schedule (``?schedule_id=``), newest first, with their counts."""
    limit, offset = page()
    rows, total = repo.list_runs(
        schedule_id=request.args.get("schedule_id") or None, limit=limit, offset=offset
    )
    return jsonify(
        {"items": [run_json(r) for r in rows], "total": total, "limit": limit, "offset": offset}
    )


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Any:
    """One run: counts, and per VM the job created or why it was skipped, then its outcome."""
    run = repo.get_run(run_id)
    return jsonify(run_json(run, vms=repo.run_vms(run.id)))


@bp.get("/<schedule_id>")
def get_schedule(schedule_id: str) -> Any:
    """One schedule."""
    return jsonify(schedule_json(repo.get_schedule(schedule_id)))


@bp.patch("/<schedule_id>")
@body(SCHEDULE_PATCH)
def update_schedule(schedule_id: str) -> Any:
    """Change a schedule; a new cron or timezone, or enabling it again, counts occurrences
    from now on (nothing that fell due meanwhile is fired)."""
    current = repo.get_schedule(schedule_id)
    data = json_body()
    no_unknown(data, FIELDS)
    return jsonify(schedule_json(repo.update_schedule(schedule_id, _fields(data, current))))


@bp.delete("/<schedule_id>")
def delete_schedule(schedule_id: str) -> Any:
    """Delete a schedule and its run history (jobs it created go on)."""
    repo.delete_schedule(schedule_id)
    return "", 204


@bp.post("/<schedule_id>/run-now")
def run_schedule_now(schedule_id: str) -> Any:
    """Fire the schedule at once (enabled or not) → 202 with the run and what it did per VM."""
    repo.get_schedule(schedule_id)
    run = run_now(schedule_id)
    response = jsonify(run_json(run, vms=repo.run_vms(run.id)))
    response.headers["Location"] = url_for(".get_run", run_id=run.id)
    return response, 202


@bp.get("/<schedule_id>/runs")
def list_schedule_runs(schedule_id: str) -> Any:
    """Runs of one schedule, newest first."""
    repo.get_schedule(schedule_id)
    limit, offset = page()
    rows, total = repo.list_runs(schedule_id=schedule_id, limit=limit, offset=offset)
    return jsonify(
        {"items": [run_json(r) for r in rows], "total": total, "limit": limit, "offset": offset}
    )
