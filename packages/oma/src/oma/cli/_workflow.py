"""Follow a workflow (a cleanup, a VM's removal) step by step until it ends."""

from __future__ import annotations

from typing import Any

import click

from ._errors import CliError, ExitCode

TERMINAL = {"completed", "done", "failed"}


def follow_workflow(api: Any, wf: dict[str, Any], *, interval: float, what: str, vm: str) -> None:
    """Print each step change of workflow ``wf`` until it ends; JOB_FAILED when it failed."""
    from .failover import follow

    final = follow(
        api, wf["id"], interval=interval, path="workflows", done=lambda w: w["status"] in TERMINAL
    )
    if final["status"] == "failed":
        raise CliError(
            f"{what} of {vm} failed: {final.get('error') or 'no error recorded'}",
            hint=f"fix the cause and run `oma cleanup {vm}` again",
            code=ExitCode.JOB_FAILED,
        )
    click.echo(f"{what} of {vm} done")


def request_cleanup(api: Any, vm: str, *, delete: bool) -> tuple[dict[str, Any], Any]:
    """(the VM's context, the API's answer) for a cleanup of ``vm``'s replicas — or, with
    ``delete``, its removal; a refusal while the VM is busy says what to do first."""
    from ._resolve import find_context, naming

    ctx = find_context(api, vm)
    try:
        with naming(ctx):
            if delete:
                return ctx, api.delete(f"vm-contexts/{ctx['id']}")
            return ctx, api.post(f"vm-contexts/{ctx['id']}/cleanup")
    except CliError as exc:
        if exc.code == ExitCode.CONFLICT:
            exc.hint = (
                f"stop its job (`oma jobs --active --vm {ctx['name']}`, `oma stop JOB`) "
                f"or roll its failover back (`oma rollback {ctx['name']}`) first"
            )
        raise


def cleanup_options(function: Any) -> Any:
    """``VM``, ``--watch``, ``--interval`` and ``--json``: what cleanup and removal take."""
    for option in reversed(
        (
            click.argument("vm"),
            click.option("--watch", is_flag=True, help="Follow the cleanup until it ends."),
            click.option(
                "--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the API's JSON."),
        )
    ):
        function = option(function)
    return function
