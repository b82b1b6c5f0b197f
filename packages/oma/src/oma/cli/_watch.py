"""Follow a job until it finishes: a live bar on a TTY, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from ._client import ApiClient
from ._errors import CliError, ExitCode
from ._format import progress_bar, progress_line

TERMINAL = {"completed", "failed", "stopped"}
UNREACHABLE_GRACE = 60.0  # seconds --watch waits for an API that went away


def watch(
    api: ApiClient, job_id: str, *, interval: float = 1.0, tty: bool | None = None
) -> dict[str, Any]:
    """Poll the job's progress until it is terminal; return the final job document.

    On a TTY one bar line is redrawn in place; otherwise a plain ``key=value`` line is printed
    at most every ``interval`` seconds, and at every status or phase change. An unreachable
    API (a restart) is waited for up to ``UNREACHABLE_GRACE`` seconds.
    """
    live = sys.stdout.isatty() if tty is None else tty
    last_key: tuple[Any, ...] | None = None
    last_print = 0.0
    down_since: float | None = None
    while True:
        try:
            p = api.get(f"progress/{job_id}")
        except CliError as exc:
            # The API may restart under us: keep watching for a while before giving up.
            if exc.code != ExitCode.UNREACHABLE:
                raise
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > UNREACHABLE_GRACE:
                raise
            time.sleep(interval)
            continue
        down_since = None
        key = (p.get("job_status"), p.get("phase"))
        now = time.monotonic()
        if live:
            click.echo("\r" + progress_bar(p).ljust(100), nl=False)
        elif key != last_key or now - last_print >= interval:
            click.echo(progress_line(p))
            last_print = now
        last_key = key
        if p.get("job_status") in TERMINAL:
            if live:
                click.echo()
            return api.get(f"replications/{job_id}")
        time.sleep(interval)


def finish(job: dict[str, Any]) -> None:
    """Print the outcome of a finished job and exit with its code."""
    from ._format import size

    disks = job.get("disks") or []
    for d in disks:
        click.echo(
            f"  disk {d['disk_key']}: {d['status']} {size(d['bytes_done'])} "
            f"(written {size(d['bytes_written'])}, zeroed {size(d['bytes_zeroed'])})"
            + (f" change_id={d['change_id']}" if d.get("change_id") else "")
        )
    if job["status"] == "completed":
        click.echo(
            f"job {job['id']} completed: {size(job['bytes_done'])} moved "
            f"({job['sync_type'] or job['type']})"
        )
        return
    if job["status"] == "stopped":
        raise CliError(f"job {job['id']} was stopped", code=ExitCode.JOB_STOPPED)
    raise CliError(
        f"job {job['id']} failed: {job['error_class']}: {job['error_message']}",
        hint="fix the cause, then run `oma replicate` again (volumes are reused)",
        code=ExitCode.JOB_FAILED,
    )


__all__ = ["finish", "watch"]
