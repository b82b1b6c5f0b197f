"""``oma rollback VM [--watch]``: roll back the VM's latest live failover.

Calls ``POST /api/v1/failovers/{id}/rollback`` (the worker does the work: the target VM is
destroyed, the replicas are reverted to their snapshots of the final sync, the source is
powered back on) and prints the failover id as the last line; ``--watch`` follows the
rollback's steps and prints whether the next sync stays incremental. A failed rollback is
resumed by running the same command again.
"""

from __future__ import annotations

from typing import Any

import click

TERMINAL = {"completed", "failed"}


@click.command("rollback")
@click.argument("vm")
@click.option("--watch", is_flag=True, help="Follow the steps until the rollback ends.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(vm: str, watch: bool, interval: float, as_json: bool) -> None:
    """Roll back VM's latest live failover (target VM removed, source powered on)."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_context, latest_failover

    with ApiClient() as api:
        ctx = find_context(api, vm)
        fo = latest_failover(api, ctx)
        try:
            fo = api.post(f"failovers/{fo['id']}/rollback")
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = "a failover is rolled back once it has completed or failed, and once"
            raise
        if as_json:
            echo_json(fo)
        else:
            verb = "resumed" if fo.get("resumed") else "requested"
            click.echo(
                f"rollback of failover {fo['id']} {verb} for {ctx['name']} "
                f"({fo['rollback']['status']})"
            )
        if watch:
            finish(ctx["name"], follow(api, fo["id"], interval=interval, vm=ctx["name"]))
        elif not as_json:
            click.echo(fo["id"])


def follow(api: Any, failover_id: str, *, interval: float = 1.0, vm: str = "VM") -> dict[str, Any]:
    """Print a line whenever a rollback step changes until the rollback ends; return the
    failover's final record. Ctrl-C says that the rollback goes on and how to re-attach."""
    from . import failover

    def steps(fo: dict[str, Any]) -> list[dict[str, Any]]:
        return list((fo.get("rollback") or {}).get("steps") or [])

    def done(fo: dict[str, Any]) -> bool:
        return (fo.get("rollback") or {}).get("status") in TERMINAL

    return failover.follow(api, failover_id, interval=interval, steps_of=steps, done=done, vm=vm)


def finish(vm: str, fo: dict[str, Any]) -> None:
    """Print the outcome of a finished rollback (incremental chain kept, or which disks
    sync in full next and why) and exit with its code."""
    from ._errors import CliError, ExitCode

    rollback = fo["rollback"]
    if rollback["status"] == "completed":
        outcome = (fo.get("result") or {}).get("rollback") or {}
        full = outcome.get("full_sync") or {}
        if full:
            click.echo(
                f"failover {fo['id']} rolled back; the next sync is full for "
                + "; ".join(f"disk {k} ({why})" for k, why in full.items())
            )
        else:
            click.echo(f"failover {fo['id']} rolled back; the next sync is incremental")
        return
    raise CliError(
        f"rollback of failover {fo['id']} failed: {rollback.get('error') or 'no error recorded'}",
        hint=f"fix the cause and run `oma rollback {vm}` again (it resumes)",
        code=ExitCode.JOB_FAILED,
    )


__all__ = ["command", "finish", "follow"]
