"""``oma cleanup VM [--watch]``: delete the VM's replica volumes and their exports.

Calls ``POST /api/v1/vm-contexts/{id}/cleanup`` (the worker does it; the VM stays managed and
its next sync is full); prints the cleanup workflow's id as the last line.
"""

from __future__ import annotations

import click


@click.command("cleanup")
@click.argument("vm")
@click.option("--watch", is_flag=True, help="Follow the cleanup's steps until it ends.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(vm: str, watch: bool, interval: float, as_json: bool) -> None:
    """Delete VM's replica volumes and exports (it stays managed; the next sync is full)."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_context, naming
    from ._workflow import follow_workflow

    with ApiClient() as api:
        ctx = find_context(api, vm)
        try:
            with naming(ctx):
                wf = api.post(f"vm-contexts/{ctx['id']}/cleanup")
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = (
                    f"stop its job (`oma jobs --active --vm {ctx['name']}`, `oma stop JOB`) "
                    f"or roll its failover back (`oma rollback {ctx['name']}`) first"
                )
            raise
        if as_json:
            echo_json(wf)
        else:
            click.echo(f"cleanup {wf['id']} of {ctx['name']} queued ({wf['status']})")
        if watch:
            follow_workflow(api, wf, interval=interval, what="cleanup", vm=ctx["name"])
        elif not as_json:
            click.echo(wf["id"])
