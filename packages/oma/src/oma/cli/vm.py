"""``oma vm show|remove VM``: one managed VM in detail; stop managing it."""

from __future__ import annotations

from typing import Any

import click

from ._help import Group
from ._workflow import cleanup_options


@click.group("vm", cls=Group)
def command() -> None:
    """One managed VM: show its disks, replicas, jobs and events; remove it from management."""


@command.command("show")
@click.argument("vm")
@click.option("--jobs", "job_count", type=click.IntRange(0, 100), default=5, show_default=True)
@click.option("--events", "event_count", type=click.IntRange(0, 100), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def show(vm: str, job_count: int, event_count: int, as_json: bool) -> None:
    """Show VM: state, disks, replica volumes, recent jobs and events."""
    from ._client import ApiClient
    from ._format import echo_json
    from ._resolve import find_context

    with ApiClient() as api:
        ctx = find_context(api, vm)
        data = api.get(f"vm-contexts/{ctx['id']}", jobs=job_count, events=event_count)
    if as_json:
        echo_json(data)
        return
    _print(data)


def _print(c: dict[str, Any]) -> None:
    from ._format import duration, elapsed, rate, size, table, when

    ready = "ready for failover" if c["ready_for_failover"] else "not ready for failover"
    click.echo(f"{c['name']}  {c['state']}, {ready}")
    click.echo(f"  id {c['id']}  VMware id {c['vm_id']}  vCenter {c['vcenter']}")
    click.echo(
        f"  last good sync {when(c['last_success_at'])}  active job {c['active_job_id'] or '-'}"
    )
    disks = [
        (d.get("disk_key"), size(d.get("capacity_bytes")), d.get("change_id")) for d in c["disks"]
    ]
    click.echo(table(("DISK", "SIZE", "CHANGE ID"), disks))
    if c.get("volumes"):
        vols = [
            (v["disk_key"], v["state"], size(v["size_bytes"]), v["cloudstack_volume_id"])
            for v in c["volumes"]
        ]
        click.echo(table(("REPLICA OF", "STATE", "SIZE", "CLOUDSTACK VOLUME"), vols))
    if c.get("jobs"):
        rows = []
        for j in c["jobs"]:
            took = elapsed(j.get("started_at"), j.get("finished_at"))
            rows.append(
                (
                    j["id"][:8],
                    j["sync_type"] or j["type"],
                    j["status"],
                    size(j["bytes_done"]),
                    duration(took),
                    rate(j["bytes_done"] / took if took and j["bytes_done"] else None),
                    when(j["finished_at"]),
                )
            )
        click.echo(table(("JOB", "TYPE", "STATUS", "MOVED", "TOOK", "RATE", "ENDED"), rows))
    for e in c.get("events") or []:
        click.echo(f"  {when(e['at'])}  {e['kind']}: {e['message']}")


@command.command("remove")
@cleanup_options
def remove(vm: str, watch: bool, interval: float, as_json: bool) -> None:
    """Stop managing VM: its replica volumes are deleted first (by the worker), then the VM."""
    from ._client import ApiClient
    from ._format import echo_json
    from ._workflow import follow_workflow, request_cleanup

    with ApiClient() as api:
        ctx, wf = request_cleanup(api, vm, delete=True)
        if not wf:
            if as_json:
                echo_json({"removed": True, "vm_context_id": ctx["id"]})
            else:
                click.echo(f"{ctx['name']} removed from management")
            return
        if as_json:
            echo_json(wf)
        else:
            click.echo(
                f"{ctx['name']}: its replicas are deleted first (cleanup {wf['id']}), "
                "then it is removed"
            )
        if watch:
            follow_workflow(api, wf, interval=interval, what="removal", vm=ctx["name"])
