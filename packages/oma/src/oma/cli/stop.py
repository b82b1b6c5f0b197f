"""``oma stop JOB``: stop a replication job.

Calls ``POST /api/v1/replications/{id}/stop``: a pending job stops at once; a running one
is flagged and the worker stops it on the VMA (``oma job JOB --watch`` follows it there).
"""

from __future__ import annotations

import click


@click.command("stop")
@click.argument("job_id", metavar="JOB")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(job_id: str, as_json: bool) -> None:
    """Stop a replication job (pending: at once; running: the worker stops it on the VMA);
    JOB is its id or a unique prefix of it."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_job

    with ApiClient() as api:
        job_id = find_job(api, job_id)
        try:
            job = api.post(f"replications/{job_id}/stop")
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = f"the job has finished; see `oma job {job_id}`"
            raise
    if as_json:
        echo_json(job)
    elif job["status"] == "stopped":
        click.echo(f"job {job['id']} stopped")
    else:
        click.echo(
            f"job {job['id']} stop requested ({job['status']}); "
            f"follow it with `oma job {job['id']} --watch`"
        )
