"""``oma schedules``: replication schedules — list, add, remove, enable, disable, run-now, runs."""

from __future__ import annotations

from typing import Any

import click

from ._client import ApiClient
from ._errors import CliError, ExitCode


def find_schedule(api: ApiClient, ref: str) -> dict[str, Any]:
    """The schedule named ``ref`` (its name, id or a unique id prefix)."""
    from ._resolve import find

    return find(api, "schedules", ref, what="schedule", hint="`oma schedules list`")


def _run_lines(run: dict[str, Any]) -> None:
    from ._format import table

    click.echo(
        f"run {run['id']}  {run['trigger']} {run['occurrence']}  eligible {run['eligible']}  "
        f"created {run['created']}  skipped {run['skipped']}  "
        f"{'finished ' + run['finished_at'] if run['finished_at'] else 'running'}"
    )
    rows = [
        (
            v["vm_name"],
            v["result"],
            v["job_id"],
            v["outcome"] or v["job_status"],
            v["reason"] or v["outcome_message"],
        )
        for v in run.get("vms", [])
    ]
    if rows:
        click.echo(table(("VM", "RESULT", "JOB", "OUTCOME", "REASON"), rows))


@click.group("schedules")
def command() -> None:
    """Replication schedules (5-field cron in a timezone) for a VM or a group."""


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_schedules(as_json: bool) -> None:
    """List schedules with their target, next occurrence and last run."""
    import json

    from ._format import table

    with ApiClient() as api:
        items = api.get("schedules")["items"]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no schedules (add one with `oma schedules add`)")
        return
    rows = [
        (
            s["name"],
            s["cron"],
            s["timezone"],
            f"{s['target']['kind']} {s['target']['name']}",
            s["type"],
            "yes" if s["enabled"] else "no",
            "skip" if s["skip_if_running"] else "defer",
            s["next_run_at"],
            (
                f"{s['last_run']['created']} created, {s['last_run']['skipped']} skipped"
                if s["last_run"]
                else None
            ),
        )
        for s in items
    ]
    click.echo(
        table(
            ("NAME", "CRON", "TZ", "TARGET", "TYPE", "ENABLED", "IF BUSY", "NEXT", "LAST RUN"), rows
        )
    )


@command.command("add")
@click.argument("name")
@click.option("--cron", "expression", required=True, help='5 fields, e.g. "0 2 * * 1-5".')
@click.option("--tz", "timezone", default="UTC", show_default=True, help="IANA timezone.")
@click.option("--vm", help="Target VM (name or id).")
@click.option("--group", help="Target group (name or id).")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["auto", "full", "incremental"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--defer-if-running",
    is_flag=True,
    help="Start a busy VM's job once its active job ends (default: skip it).",
)
@click.option("--disabled", is_flag=True, help="Create it disabled.")
def add(
    name: str,
    expression: str,
    timezone: str,
    vm: str | None,
    group: str | None,
    kind: str,
    defer_if_running: bool,
    disabled: bool,
) -> None:
    """Add a schedule for one VM (--vm) or a group (--group)."""
    from ._resolve import find_context
    from .groups import find_group

    if bool(vm) == bool(group):
        raise CliError("give exactly one of --vm or --group", code=ExitCode.USAGE)
    with ApiClient() as api:
        target = (
            {"vm_context_id": find_context(api, vm)["id"]}
            if vm
            else {"group_id": find_group(api, group or "")["id"]}
        )
        row = api.post(
            "schedules",
            {
                "name": name,
                "cron": expression,
                "timezone": timezone,
                "type": kind,
                "skip_if_running": not defer_if_running,
                "enabled": not disabled,
                **target,
            },
        )
    click.echo(f"schedule {row['name']} added ({row['id']}); next run {row['next_run_at']}")


@command.command("remove")
@click.argument("schedule")
def remove(schedule: str) -> None:
    """Delete a schedule and its run history."""
    with ApiClient() as api:
        row = find_schedule(api, schedule)
        api.delete(f"schedules/{row['id']}")
    click.echo(f"schedule {row['name']} deleted")


@command.command("enable")
@click.argument("schedule")
def enable(schedule: str) -> None:
    """Enable a schedule (occurrences count from now; nothing missed is fired)."""
    with ApiClient() as api:
        row = api.patch(f"schedules/{find_schedule(api, schedule)['id']}", {"enabled": True})
    click.echo(f"schedule {row['name']} enabled; next run {row['next_run_at']}")


@command.command("disable")
@click.argument("schedule")
def disable(schedule: str) -> None:
    """Disable a schedule."""
    with ApiClient() as api:
        row = api.patch(f"schedules/{find_schedule(api, schedule)['id']}", {"enabled": False})
    click.echo(f"schedule {row['name']} disabled")


@command.command("run-now")
@click.argument("schedule")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def run_now(schedule: str, as_json: bool) -> None:
    """Fire a schedule at once and show what it did per VM."""
    import json

    with ApiClient() as api:
        run = api.post(f"schedules/{find_schedule(api, schedule)['id']}/run-now")
    click.echo(json.dumps(run, indent=2)) if as_json else _run_lines(run)


@command.command("runs")
@click.argument("schedule", required=False)
@click.option("--run", "run_id", help="Show this run with its per-VM results.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def runs(schedule: str | None, run_id: str | None, limit: int, as_json: bool) -> None:
    """Runs, newest first (of one schedule when named), or one run with --run."""
    import json

    from ._format import table

    with ApiClient() as api:
        if run_id:
            run = api.get(f"schedules/runs/{run_id}")
            click.echo(json.dumps(run, indent=2)) if as_json else _run_lines(run)
            return
        sid = find_schedule(api, schedule)["id"] if schedule else None
        page = api.get("schedules/runs", schedule_id=sid, limit=limit)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    if not page["items"]:
        click.echo("no runs")
        return
    rows = [
        (
            r["id"],
            r["trigger"],
            r["occurrence"],
            r["eligible"],
            r["created"],
            r["skipped"],
            r["finished_at"] or "running",
        )
        for r in page["items"]
    ]
    click.echo(
        table(("RUN", "TRIGGER", "OCCURRENCE", "ELIGIBLE", "CREATED", "SKIPPED", "FINISHED"), rows)
    )
