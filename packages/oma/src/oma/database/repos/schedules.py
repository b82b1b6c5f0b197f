"""schedules, schedule_runs and schedule_run_vms: what fires when, and what each run did.

Firing itself (cron evaluation, job creation, outcomes) is :mod:`oma.services.schedules`.
"""

from __future__ import annotations

from typing import Any

from peewee import fn

from ..fields import now
from ..models import Schedule, ScheduleRun, ScheduleRunVm
from ._select import Page
from ._util import get_or_raise, paginate, translate_integrity, update_row

TIMING = ("cron", "timezone")
"""Fields whose change restarts a schedule's occurrences from now (nothing missed is fired)."""


def create_schedule(
    name: str,
    cron: str,
    *,
    timezone: str = "UTC",
    context_id: str | None = None,
    group_id: str | None = None,
    enabled: bool = True,
    skip_if_running: bool = True,
    replication_type: str = "auto",
) -> Schedule:
    """A new schedule for one VM or one group (the caller validated cron and timezone)."""
    with translate_integrity(f"a schedule named {name!r} already exists", field="name"):
        return Schedule.create(
            name=name,
            cron=cron,
            timezone=timezone,
            context=context_id,
            group=group_id,
            enabled=enabled,
            skip_if_running=skip_if_running,
            replication_type=replication_type,
        )


def get_schedule(schedule_id: str) -> Schedule:
    """The schedule with this id, or NotFoundError."""
    return get_or_raise(Schedule, schedule_id, "schedule")


def list_schedules() -> list[Schedule]:
    """Every schedule, by name."""
    return list(Schedule.select().order_by(Schedule.name))


def update_schedule(schedule_id: str, fields: dict[str, Any]) -> Schedule:
    """Change a schedule. A new cron or timezone, or enabling it again, restarts its
    occurrences from now: what fell due before is not fired."""
    row = get_schedule(schedule_id)
    values = dict(fields)
    if any(k in values and values[k] != getattr(row, k) for k in TIMING) or (
        values.get("enabled") is True and not row.enabled
    ):
        values["active_since"] = now()
    return update_row(Schedule, schedule_id, "schedule", values)


def delete_schedule(schedule_id: str) -> None:
    """Delete a schedule and its runs (jobs already created keep running)."""
    get_schedule(schedule_id).delete_instance()


def last_occurrences(schedule_ids: list[str]) -> dict[str, Any]:
    """Per schedule, the latest cron occurrence it fired (manual runs aside)."""
    if not schedule_ids:
        return {}
    rows = (
        ScheduleRun.select(ScheduleRun.schedule, fn.MAX(ScheduleRun.occurrence).alias("last"))
        .where(ScheduleRun.schedule.in_(schedule_ids), ScheduleRun.trigger == "schedule")
        .group_by(ScheduleRun.schedule)
    )
    field = ScheduleRun.occurrence
    return {r.schedule_id: field.python_value(r.last) for r in rows}


def list_runs(*, schedule_id: str | None = None, limit: int = 50, offset: int = 0) -> Page:
    """A page of runs, newest first."""
    query = ScheduleRun.select()
    if schedule_id:
        query = query.where(ScheduleRun.schedule == schedule_id)
    query = query.order_by(ScheduleRun.started_at.desc(), ScheduleRun.id)
    return paginate(query, limit, offset)


def get_run(run_id: str) -> ScheduleRun:
    """The run with this id, or NotFoundError."""
    return get_or_raise(ScheduleRun, run_id, "schedule run")


def run_vms(run_id: str) -> list[ScheduleRunVm]:
    """What the run did per VM, by VM name."""
    return list(
        ScheduleRunVm.select()
        .where(ScheduleRunVm.run == run_id)
        .order_by(ScheduleRunVm.vm_name, ScheduleRunVm.id)
    )
