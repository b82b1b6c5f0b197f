"""``oma cleanup VM [--watch]``: delete the VM's replica volumes and their exports.

Calls ``POST /api/v1/vm-contexts/{id}/cleanup`` (the worker does it; the VM stays managed and
its next sync is full); prints the cleanup workflow's id as the last line.
"""

from __future__ import annotations

import click

from ._workflow import cleanup_options, follow_workflow, request_cleanup


@click.command("cleanup")
@cleanup_options
def command(vm: str, watch: bool, interval: float, as_json: bool) -> None:
    """Delete VM's replica volumes and exports (it stays managed; the next sync is full)."""
    from ._client import ApiClient
    from ._format import echo_json

    with ApiClient() as api:
        ctx, wf = request_cleanup(api, vm, delete=False)
        if as_json:
            echo_json(wf)
        else:
            click.echo(f"cleanup {wf['id']} of {ctx['name']} queued ({wf['status']})")
        if watch:
            follow_workflow(api, wf, interval=interval, what="cleanup", vm=ctx["name"])
        elif not as_json:
            click.echo(wf["id"])
