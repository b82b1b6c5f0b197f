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
def command(vm: str, watch: bool, interval: float) -> None:
    """Roll back VM's latest live failover (target VM removed, source powered on)."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
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
        verb = "resumed" if fo.get("resumed") else "requested"
        click.echo(
            f"rollback of failover {fo['id']} {verb} for {ctx['name']} ({fo['rollback']['status']})"
        )
        if not watch:
            click.echo(fo["id"])
            return
        finish(vm, follow(api, fo["id"], interval=interval))


def follow(api: Any, failover_id: str, *, interval: float = 1.0) -> dict[str, Any]:
    """Print a line whenever a rollback step changes until the rollback ends; return the
    failover's final record. Ctrl-C raises KeyboardInterrupt (see
    :class:`oma.cli._watch.CtrlC`)."""
    from ._watch import CtrlC
    from .failover import _step_line

    seen: dict[str, tuple[Any, ...]] = {}
    with CtrlC() as ctrl_c:
        while True:
            fo = api.get(f"failovers/{failover_id}")
            ctrl_c.check()
            rollback = fo.get("rollback") or {"status": "pending", "steps": []}
            for step in rollback["steps"]:
                key = (step["status"], step.get("waiting_for"), step.get("error"))
                if seen.get(step["name"], ("pending", None, None)) != key:
                    seen[step["name"]] = key
                    click.echo(_step_line(step))
            if rollback["status"] in TERMINAL:
                return fo
            ctrl_c.sleep(interval)


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
