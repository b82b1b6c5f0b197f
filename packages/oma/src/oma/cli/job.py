"""``oma job ID [--watch]``: one job's details, or follow it live until it finishes."""

from __future__ import annotations

import click


@click.command("job")
@click.argument("job_id")
@click.option("--watch", is_flag=True, help="Follow progress until the job finishes.")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    help="Seconds between progress polls with --watch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(job_id: str, watch: bool, interval: float, as_json: bool) -> None:
    """Show a job (status, per-disk bytes, error) or --watch it with a live progress bar."""
    import json

    from ._client import ApiClient
    from ._format import progress_line
    from ._watch import finish
    from ._watch import watch as follow

    with ApiClient() as api:
        if watch:
            finish(follow(api, job_id, interval=interval))
            return
        job = api.get(f"replications/{job_id}")
        if as_json:
            click.echo(json.dumps(job, indent=2))
            return
        click.echo(progress_line({**job, "job_id": job["id"], "job_status": job["status"]}))
        if job.get("wait_reason"):
            click.echo(f"  waiting: {job['wait_reason']}")
        for d in job["disks"]:
            click.echo(
                f"  disk {d['disk_key']}: {d['status']} phase={d['phase'] or '-'} "
                f"{d['bytes_done']}/{d['bytes_total']} bytes"
                + (f" error={d['error']}" if d.get("error") else "")
            )
        if job["error_message"]:
            click.echo(f"  error: {job['error_class']}: {job['error_message']}")
