"""Schedules (5-field cron + IANA timezone, for one VM or a group), run-now, and their runs.

``oma worker`` fires due schedules (:mod:`oma.services.schedules`); ``run-now`` fires one at
once. Each run records per VM whether a job was created or why it was skipped, then the
job's outcome.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, g, jsonify, url_for
from pydantic import AfterValidator, ConfigDict, Field, model_validator
from werkzeug.routing import BaseConverter

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
from .paging import page_json
from .requests import Body, Id, Name, NoBody, PageQuery, body, line, query, unprocessable
from .serialize import ts

bp = Blueprint("schedules", __name__, url_prefix="/api/v1/schedules")


class ScheduleIdConverter(BaseConverter):
    """A schedule id: any path segment but ``runs`` (``/schedules/runs`` lists the runs, so
    an OPTIONS on it must not offer a schedule's PATCH and DELETE)."""

    regex = "(?!runs$)[^/]+"


bp.record_once(lambda state: state.app.url_map.converters.setdefault("sid", ScheduleIdConverter))


def _zone(value: str) -> str:
    if value not in cron.zone_names():
        raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Paris")
    return value


Timezone = Annotated[
    str,
    AfterValidator(_zone),
    Field(
        description="an IANA timezone",
        json_schema_extra={"enum": sorted(cron.zone_names())},
    ),
]
ReplicationType = Literal["auto", "full", "incremental"]


class _ScheduleFields(Body):
    name: Name = None  # type: ignore[assignment]
    cron: line(100) = Field(  # type: ignore[valid-type]
        None, description="5 fields: minute hour day-of-month month day-of-week"
    )
    timezone: Timezone = "UTC"
    enabled: bool = True
    skip_if_running: bool = Field(
        True,
        description="a VM with an active job is skipped (false: its job starts once that ends)",
    )
    type: ReplicationType = "auto"


class ScheduleCreate(_ScheduleFields):
    """``POST /schedules``: for one VM or one group (exactly one of the two)."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["vm_context_id"]}, {"required": ["group_id"]}]}
    )

    name: Name
    cron: line(100)  # type: ignore[valid-type]
    vm_context_id: Id | None = None
    group_id: Id | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ScheduleCreate:
        if ("vm_context_id" in self.given()) == ("group_id" in self.given()):
            raise ValueError("vm_context_id: give exactly one of vm_context_id or group_id")
        return self


class SchedulePatch(_ScheduleFields):
    """``PATCH /schedules/{id}``: only the fields given change."""


def _fields(data: _ScheduleFields, current: Schedule | None = None) -> dict[str, Any]:
    """Columns from a create (``current`` None) or patch body; 422 for a cron that does not
    parse in its timezone."""
    given = data.given() if current else data.given() | {"name", "cron", "timezone"}
    fields: dict[str, Any] = {}
    if "name" in given:
        fields["name"] = data.name.strip()
    zone = data.timezone if "timezone" in given else current.timezone  # type: ignore[union-attr]
    if "timezone" in given:
        fields["timezone"] = zone
    expression = data.cron if "cron" in given else current.cron  # type: ignore[union-attr]
    try:
        fields["cron"] = cron.parse(expression.strip(), zone).expression
    except ValueError as exc:
        raise unprocessable("cron", str(exc)) from None
    for name in ("enabled", "skip_if_running"):
        if name in given or current is None:
            fields[name] = getattr(data, name)
    if "type" in given or current is None:
        fields["replication_type"] = RequestedType(data.type).value
    return fields


def _target(data: ScheduleCreate) -> tuple[str | None, str | None]:
    """(context id, group id); 422 naming the field when it does not exist."""
    context_id = data.vm_context_id.strip() if data.vm_context_id else None
    group_id = data.group_id.strip() if data.group_id else None
    if context_id and VmContext.get_or_none(VmContext.id == context_id) is None:
        raise unprocessable("vm_context_id", f"unknown VM context {context_id}")
    if group_id and MachineGroup.get_or_none(MachineGroup.id == group_id) is None:
        raise unprocessable("group_id", f"unknown group {group_id}")
    return context_id, group_id


class RunsQuery(PageQuery):
    """``GET /schedules/runs``."""

    schedule_id: Id | None = None


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
@body(ScheduleCreate)
def create_schedule() -> Any:
    """Create a schedule: ``{"name", "cron" (5 fields), "timezone"? (IANA, default UTC),
    "vm_context_id" | "group_id", "enabled"?, "skip_if_running"? (default true: a VM with an
    active job is skipped; false: its job starts once that one ends), "type"?}`` → 201;
    400 naming the field that breaks the schema (an unknown timezone), 422 for a cron that
    does not parse or an unknown VM or group."""
    data: ScheduleCreate = g.body
    fields = _fields(data)
    context_id, group_id = _target(data)
    row = repo.create_schedule(
        fields.pop("name"), fields.pop("cron"), context_id=context_id, group_id=group_id, **fields
    )
    response = jsonify(schedule_json(row))
    response.headers["Location"] = url_for(".get_schedule", schedule_id=row.id)
    return response, 201


@bp.get("/runs")
@query(RunsQuery)
def list_runs() -> Any:
    """Runs of every schedule (``?schedule_id=``), newest first, with their counts."""
    q: RunsQuery = g.query
    limit, offset = q.limit, q.offset
    found = repo.list_runs(schedule_id=q.schedule_id, limit=limit, offset=offset)
    items = [run_json(r) for r in found.items]
    return jsonify(page_json(found, items, limit=limit, offset=offset))


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Any:
    """One run: counts, and per VM the job created or why it was skipped, then its outcome."""
    run = repo.get_run(run_id)
    return jsonify(run_json(run, vms=repo.run_vms(run.id)))


@bp.get("/<sid:schedule_id>")
def get_schedule(schedule_id: str) -> Any:
    """One schedule."""
    return jsonify(schedule_json(repo.get_schedule(schedule_id)))


@bp.patch("/<sid:schedule_id>")
@body(SchedulePatch)
def update_schedule(schedule_id: str) -> Any:
    """Change a schedule; a new cron or timezone, or enabling it again, counts occurrences
    from now on (nothing that fell due meanwhile is fired)."""
    current = repo.get_schedule(schedule_id)
    return jsonify(schedule_json(repo.update_schedule(schedule_id, _fields(g.body, current))))


@bp.delete("/<sid:schedule_id>")
def delete_schedule(schedule_id: str) -> Any:
    """Delete a schedule and its run history (jobs it created go on)."""
    repo.delete_schedule(schedule_id)
    return "", 204


@bp.post("/<sid:schedule_id>/run-now")
@body(NoBody)
def run_schedule_now(schedule_id: str) -> Any:
    """Fire the schedule at once (enabled or not) → 202 with the run and what it did per VM."""
    repo.get_schedule(schedule_id)
    run = run_now(schedule_id)
    response = jsonify(run_json(run, vms=repo.run_vms(run.id)))
    response.headers["Location"] = url_for(".get_run", run_id=run.id)
    return response, 202


@bp.get("/<sid:schedule_id>/runs")
@query(PageQuery)
def list_schedule_runs(schedule_id: str) -> Any:
    """Runs of one schedule, newest first."""
    repo.get_schedule(schedule_id)
    limit, offset = g.query.limit, g.query.offset
    found = repo.list_runs(schedule_id=schedule_id, limit=limit, offset=offset)
    items = [run_json(r) for r in found.items]
    return jsonify(page_json(found, items, limit=limit, offset=offset))
