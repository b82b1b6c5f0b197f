"""``oma failover VM --network SRC=ID --offering ID [--watch]``: start a live failover.

Calls ``POST /api/v1/vm-contexts/{id}/failover`` (the worker does the work) and prints the
failover id as the last line; ``--watch`` follows its steps until it completes or fails.
A failed failover is resumed by running the same command again (done steps are kept).
"""

from __future__ import annotations

from typing import Any

import click

TERMINAL = {"completed", "failed", "rolled_back"}


def _mappings(values: tuple[str, ...]) -> dict[str, str]:
    """``SRC=ID`` pairs → ``{source network: CloudStack network id}`` (usage error otherwise)."""
    out: dict[str, str] = {}
    for value in values:
        source, sep, network_id = value.partition("=")
        if not sep or not source.strip() or not network_id.strip():
            raise click.BadParameter(
                f"{value!r}: expected SOURCE_NETWORK=CLOUDSTACK_NETWORK_ID", param_hint="--network"
            )
        out[source.strip()] = network_id.strip()
    return out


@click.command("failover")
@click.argument("vm")
@click.option(
    "--network",
    "networks",
    multiple=True,
    required=True,
    metavar="SRC=ID",
    help="Map a source network (name) to a CloudStack network id; repeat per network.",
)
@click.option("--offering", required=True, help="CloudStack service offering id.")
@click.option("--template", help="CloudStack template id (default: the one matching the guest OS).")
@click.option("--vm-name", help="Name of the CloudStack VM (default: the VMware name).")
@click.option(
    "--new-macs", is_flag=True, help="Let CloudStack choose MAC addresses (default: keep)."
)
@click.option(
    "--graceful-timeout",
    type=click.IntRange(0, 86400),
    default=300,
    show_default=True,
    help="Seconds to wait for the guest to shut down before forcing it off.",
)
@click.option("--no-force", is_flag=True, help="Fail instead of forcing the source off.")
@click.option("--watch", is_flag=True, help="Follow the steps until the failover ends.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
def command(
    vm: str,
    networks: tuple[str, ...],
    offering: str,
    template: str | None,
    vm_name: str | None,
    new_macs: bool,
    graceful_timeout: int,
    no_force: bool,
    watch: bool,
    interval: float,
) -> None:
    """Fail VM over to CloudStack (live: the source is powered off); prints the failover id."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._resolve import find_context

    body: dict[str, Any] = {
        "type": "live",
        "network_mappings": _mappings(networks),
        "service_offering_id": offering,
        "keep_macs": not new_macs,
        "graceful_timeout_s": graceful_timeout,
        "force": not no_force,
    }
    if template:
        body["template_id"] = template
    if vm_name:
        body["vm_name"] = vm_name
    with ApiClient() as api:
        ctx = find_context(api, vm)
        try:
            fo = api.post(f"vm-contexts/{ctx['id']}/failover", body)
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = "see `oma vms` (state) and `oma jobs --active --vm VM`"
            raise
        verb = "resumed" if fo.get("resumed") else "requested"
        click.echo(f"failover {fo['id']} {verb} for {ctx['name']} ({fo['status']})")
        if not watch:
            click.echo(fo["id"])
            return
        finish(follow(api, fo["id"], interval=interval))


def _step_line(step: dict[str, Any]) -> str:
    took = step.get("duration_seconds")
    line = f"step {step['position'] + 1} {step['name']}: {step['status']}"
    if took is not None:
        line += f" ({took:.1f} s)"
    if step.get("waiting_for"):
        line += f" - {step['waiting_for']}"
    if step.get("error"):
        line += f" - {step['error']}"
    return line


def follow(api: Any, failover_id: str, *, interval: float = 1.0) -> dict[str, Any]:
    """Print a line whenever a step changes (status, or what it waits for) until the
    failover is terminal; return the final record. Ctrl-C raises KeyboardInterrupt whatever
    SIGINT disposition the process inherited (see :class:`oma.cli._watch.CtrlC`)."""
    from ._watch import CtrlC

    seen: dict[str, tuple[Any, ...]] = {}
    with CtrlC() as ctrl_c:
        while True:
            fo = api.get(f"failovers/{failover_id}")
            ctrl_c.check()
            for step in fo["steps"]:
                key = (step["status"], step.get("waiting_for"), step.get("error"))
                if seen.get(step["name"], ("pending", None, None)) != key:
                    seen[step["name"]] = key
                    click.echo(_step_line(step))
            if fo["status"] in TERMINAL:
                return fo
            ctrl_c.sleep(interval)


def finish(fo: dict[str, Any]) -> None:
    """Print the outcome of a finished failover and exit with its code."""
    from ._errors import CliError, ExitCode
    from ._format import size

    if fo["status"] == "completed":
        result = fo.get("result") or {}
        downtime = result.get("downtime_seconds")
        click.echo(
            f"failover {fo['id']} completed: target VM {result.get('target_vm_id')}, "
            f"downtime {downtime if downtime is not None else '-'} s, "
            f"final sync {size(result.get('final_sync_bytes'))}"
        )
        return
    raise CliError(
        f"failover {fo['id']} {fo['status']}: {fo.get('error') or 'no error recorded'}",
        hint="fix the cause and run the same command again (it resumes), "
        f"or roll back: POST /api/v1/failovers/{fo['id']}/rollback",
        code=ExitCode.JOB_FAILED,
    )


__all__ = ["command", "finish", "follow"]
