"""``oma job ID [--watch]``: one job's details, or follow it live until it finishes."""

from __future__ import annotations

import click


@click.command("job")
@click.argument("job_id", metavar="JOB")
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
    """Show a job (status, sizes, timing, per-disk progress, error), or --watch it live; JOB
    is the job's id or a unique prefix of it."""
    from ._client import ApiClient
    from ._format import echo_json
    from ._resolve import find_job
    from ._watch import finish
    from ._watch import watch as follow

    with ApiClient() as api:
        job_id = find_job(api, job_id)
        if watch:
            finish(follow(api, job_id, interval=interval))
            return
        job = api.get(f"replications/{job_id}")
    if as_json:
        echo_json(job)
        return
    _print(job)


def _print(job: dict) -> None:
    from ._format import duration, elapsed, progress_line, rate, size, when
    from ._watch import error_text, summary

    click.echo(progress_line({**job, "job_status": job["status"]}))
    kind = job["sync_type"] or job["type"]
    click.echo(
        f"  VM {job['vm_name'] or job['vm_context_id']}, {kind} sync, attempt {job['attempts']}"
    )
    click.echo(
        f"  created {when(job['created_at'])}  started {when(job['started_at'])}  "
        f"ended {when(job['finished_at'])}"
    )
    if job["finished_at"]:
        click.echo(f"  {summary(job)}")
    elif job["started_at"]:
        took = elapsed(job["started_at"], job["updated_at"])
        click.echo(
            f"  {size(job['bytes_done'])} of {size(job['bytes_total'])} so far in "
            f"{duration(took)}, now {rate(job['throughput_bps'])}"
        )
    if job.get("stop_requested") and job["active"]:
        click.echo("  stop requested: the worker is stopping it on the VMA")
    if job.get("wait_reason"):
        click.echo(f"  waiting: {job['wait_reason']}")
    if job.get("verify"):
        click.echo(f"  verification: {_verification(job)}")
    if job.get("resume"):
        click.echo(f"  resume: {_resume(job['resume'])}")
    for d in job["disks"]:
        click.echo(
            f"  disk {d['disk_key']}: {d['status']} phase={d['phase'] or '-'} "
            f"{size(d['bytes_done'])}/{size(d['bytes_total'])}"
            + _digests(d)
            + (f" error={d['error']}" if d.get("error") else "")
        )
    if job["status"] == "stopped":
        copied = job["bytes_total"] and job["bytes_done"] >= job["bytes_total"]
        where = "after the copy finished" if copied else f"at {float(job['percent'] or 0):.1f} %"
        click.echo(f"  stopped {where} (phase {job['phase'] or '-'})")
    elif job["error_message"]:
        click.echo(f"  error: {error_text(job)}")


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
