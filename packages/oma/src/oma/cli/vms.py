"""``oma vms``: the protected VMs and their state."""

from __future__ import annotations

import click


@click.command("vms")
@click.option("--state", help="Only VMs in this state (discovered, replicating, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(state: str | None, as_json: bool) -> None:
    """List managed VMs: name, state, disks, size, active job."""
    import json

    from ._client import ApiClient
    from ._format import size, table
    from ._resolve import pages

    with ApiClient() as api:
        items = list(pages(api, "vm-contexts", state=state))
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no managed VMs (add some through discovery)")
        return
    rows = [
        (
            c["name"],
            c["state"],
            len(c["disks"]),
            size(sum(d["capacity_bytes"] for d in c["disks"])),
            "yes" if c["ready_for_failover"] else "no",
            c["active_job_id"],
            c["id"],
        )
        for c in items
    ]
    click.echo(table(("NAME", "STATE", "DISKS", "SIZE", "READY", "ACTIVE JOB", "ID"), rows))
