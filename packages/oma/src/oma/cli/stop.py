"""``oma stop JOB``: stop a replication job.

Calls ``POST /api/v1/replications/{id}/stop``: a pending job stops at once; a running one
is flagged and the worker stops it on the VMA (``oma job JOB --watch`` follows it there).
"""

from __future__ import annotations

import click


@click.command("stop")
@click.argument("job_id")
def command(job_id: str) -> None:
    """Stop a replication job (pending: at once; running: the worker stops it on the VMA)."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode

    with ApiClient() as api:
        try:
            job = api.post(f"replications/{job_id}/stop")
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = f"the job has finished; see `oma job {job_id}`"
            raise
    if job["status"] == "stopped":
        click.echo(f"job {job['id']} stopped")
    else:
        click.echo(
            f"job {job['id']} stop requested ({job['status']}); "
            f"follow it with `oma job {job['id']} --watch`"
        )
