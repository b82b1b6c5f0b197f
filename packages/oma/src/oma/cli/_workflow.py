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
