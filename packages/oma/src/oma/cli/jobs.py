"""``oma jobs``: replication jobs, newest first."""

from __future__ import annotations

import click

STATUSES = ("pending", "provisioning", "ready", "replicating", "completed", "failed", "stopped")


@click.command("jobs")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    multiple=True,
    help="Only jobs in this status (repeatable).",
)
@click.option("--active", is_flag=True, help="Only jobs that are not finished.")
@click.option("--vm", "vm_ref", help="Only jobs of this VM (name or id).")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(
    status: tuple[str, ...], active: bool, vm_ref: str | None, limit: int, as_json: bool
) -> None:
    """List replication jobs with status, progress and errors."""
    from ._client import ApiClient
    from ._format import duration, echo_json, elapsed, size, table, when
    from ._resolve import find_context

    with ApiClient() as api:
        context_id = find_context(api, vm_ref)["id"] if vm_ref else None
        page = api.get(
            "replications",
            status=",".join(status) or None,
            active="true" if active else None,
            vm_context_id=context_id,
            limit=limit,
        )
    if as_json:
        echo_json(page)
        return
    if not page["items"]:
        click.echo("no jobs")
        return
    rows = [
        (
            j["id"][:8],
            j["vm_name"],
            j["sync_type"] or j["type"],
            j["status"] + ("(stopping)" if j.get("stop_requested") and j["active"] else ""),
            f"{float(j['percent'] or 0):.1f}%",
            f"{size(j['bytes_done'])}/{size(j['bytes_total'])}",
            when(j["created_at"]),
            duration(elapsed(j["started_at"], j["finished_at"])),
            when(j["finished_at"]),
            j["error_class"],
        )
        for j in page["items"]
    ]
    headers = ("JOB", "VM", "TYPE", "STATUS", "DONE", "BYTES", "CREATED", "TOOK", "ENDED", "ERROR")
    click.echo(table(headers, rows))
    if page["has_more"]:
        total = f"{page['total']}" + ("" if page["total_exact"] else "+")
        click.echo(f"({len(page['items'])} of {total}; use --limit)")
