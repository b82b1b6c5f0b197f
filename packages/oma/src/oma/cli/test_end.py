"""``oma test-end VM [--watch]``: end a VM's test failover.

Calls ``POST /api/v1/vm-contexts/{id}/test-failover/end`` (the worker destroys the test VM and
deletes its volumes and snapshots; the VM returns to ready_for_failover) and prints the test
failover's id as the last line; ``--watch`` follows the end's steps. A failed end is resumed
by running the same command again.
"""

from __future__ import annotations

from typing import Any

import click


def _end_steps(record: dict[str, Any]) -> list[dict[str, Any]]:
    return list((record.get("end") or {}).get("steps") or [])


def _end_settled(record: dict[str, Any]) -> bool:
    return record["status"] == "ended" or (record.get("end") or {}).get("status") == "failed"


@click.command("test-end")
@click.argument("vm")
@click.option("--watch", is_flag=True, help="Follow the steps until the test has ended.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(vm: str, watch: bool, interval: float, as_json: bool) -> None:
    """End VM's test failover: its test VM, volumes and snapshots go; prints the test's id."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_context, naming
    from .failover import follow

    with ApiClient() as api:
        ctx = find_context(api, vm)
        try:
            with naming(ctx):
                test = api.post(f"vm-contexts/{ctx['id']}/test-failover/end", {})
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = "see `oma vms` (state): only a VM in failed_over_test has a test"
            raise
        if as_json:
            echo_json(test)
        else:
            click.echo(f"ending test failover {test['id']} of {ctx['name']} ({test['status']})")
        if not watch:
            if not as_json:
                click.echo(test["id"])
            return
        test = follow(
            api,
            test["id"],
            interval=interval,
            path="test-failovers",
            steps_of=_end_steps,
            done=_end_settled,
            vm=ctx["name"],
        )
        if test["status"] != "ended":
            end = test.get("end") or {}
            raise CliError(
                f"ending test failover {test['id']} failed: {end.get('error') or 'no error'}",
                hint=f"fix the cause and run `oma test-end {ctx['name']}` again (it resumes)",
                code=ExitCode.JOB_FAILED,
            )
        click.echo(f"test failover {test['id']} ended: its VM, volumes and snapshots are gone")


__all__ = ["command"]
