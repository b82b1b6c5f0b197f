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
        if job.get("verify"):
            click.echo(f"  verification: {_verification(job)}")
        if job.get("resume"):
            click.echo(f"  resume: {_resume(job['resume'])}")
        for d in job["disks"]:
            click.echo(
                f"  disk {d['disk_key']}: {d['status']} phase={d['phase'] or '-'} "
                f"{d['bytes_done']}/{d['bytes_total']} bytes"
                + _digests(d)
                + (f" error={d['error']}" if d.get("error") else "")
            )
        if job["error_message"]:
            click.echo(f"  error: {job['error_class']}: {job['error_message']}")


def _resume(decision: dict) -> str:
    """Where a resumed full copy started, or why it did not resume."""
    if decision.get("resumed"):
        where = ", ".join(
            f"disk {k} from byte {v}" for k, v in sorted((decision.get("disks") or {}).items())
        )
        return f"continued job {decision['from_job']}'s copy ({where})"
    return f"not resumed from job {decision.get('from_job')}: {decision.get('reason')}"


def _verification(job: dict) -> str:
    """The job's verification result in a word (or two)."""
    if job.get("verified") is True:
        return "verified (every replica reads back the source's bytes)"
    if job.get("verified") is False:
        return "MISMATCH (error class verify_mismatch)"
    return "pending" if job.get("active") else "not done"


def _digests(disk: dict) -> str:
    """`` verified sha256=…`` or `` MISMATCH source sha256=… replica sha256=…`` (or nothing)."""
    if disk.get("verified") is True:
        return f" verified sha256={disk['source_sha256']}"
    if disk.get("verified") is False:
        return (
            f" MISMATCH source sha256={disk['source_sha256']} "
            f"replica sha256={disk['target_sha256']}"
        )
    return ""
