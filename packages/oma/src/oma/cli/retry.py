"""``oma retry VM [--watch]``: resume the VM's failed live failover from its failed step.

Calls ``POST /api/v1/failovers/{id}/retry`` with the failover's stored parameters (steps
already done are kept) and prints the failover id as the last line; ``--watch`` follows its
steps as ``oma failover --watch`` does.
"""

from __future__ import annotations

import click


@click.command("retry")
@click.argument("vm")
@click.option("--watch", is_flag=True, help="Follow the steps until the failover ends.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(vm: str, watch: bool, interval: float, as_json: bool) -> None:
    """Retry VM's failed live failover (resumes at the failed step)."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_context, latest_failover
    from .failover import finish, follow

    with ApiClient() as api:
        ctx = find_context(api, vm)
        fo = latest_failover(api, ctx)
        try:
            fo = api.post(f"failovers/{fo['id']}/retry")
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = (
                    "only a failed failover is retried; "
                    f"roll back with `oma rollback {ctx['name']}`"
                )
            raise
        if as_json:
            echo_json(fo)
        else:
            click.echo(f"failover {fo['id']} resumed for {ctx['name']} ({fo['status']})")
        if watch:
            finish(follow(api, fo["id"], interval=interval, vm=ctx["name"]), vm=ctx["name"])
        elif not as_json:
            click.echo(fo["id"])
