"""``oma failover VM --network SRC=ID --offering ID [--test] [--watch]``: start a failover;
``oma failover show|retry|rollback VM``: follow, resume or undo it.

Calls ``POST /api/v1/vm-contexts/{id}/failover`` (the worker does the work) and prints the
failover id as the last line; ``--watch`` follows its steps until it completes or fails.
A failed failover is resumed by running the same command again (done steps are kept).
``--test`` starts a test failover instead (the source keeps running; ``--test-network ID``
puts every NIC on one isolated network, ``--auto-end 2h`` ends it by itself; ``oma test-end
VM`` ends it); ``--end-test`` lets a live failover end the VM's test first.
"""

from __future__ import annotations

from typing import Any

import click

from ._format import echo_json
from ._help import DefaultGroup
from ._watch import CtrlC

TERMINAL = {"completed", "failed", "rolled_back", "ended"}


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


@click.group("failover", cls=DefaultGroup)
def command() -> None:
    """Fail a VM over to CloudStack: `oma failover VM --network SRC=ID --offering ID`
    (the same as `oma failover start VM ...`); then show, retry or rollback."""


@command.command("start")
@click.argument("vm")
@click.option(
    "--network",
    "networks",
    multiple=True,
    metavar="SRC=ID",
    help="Map a source network (name) to a CloudStack network (id, name or id prefix); "
    "repeat per network.",
)
@click.option("--test", "test", is_flag=True, help="A test failover: the source keeps running.")
@click.option(
    "--test-network",
    metavar="ID",
    help="Test only: one isolated CloudStack network for every NIC (instead of --network).",
)
@click.option(
    "--auto-end", metavar="DURATION", help="Test only: end the test after e.g. 3600, 30m, 2h."
)
@click.option("--end-test", is_flag=True, help="Live only: end the VM's test failover first.")
@click.option(
    "--offering", required=True, help="CloudStack service offering (id, name or id prefix)."
)
@click.option(
    "--template",
    help="CloudStack template (id, name or id prefix; default: the one matching the guest OS).",
)
@click.option("--vm-name", help="Name of the CloudStack VM (default: the VMware name).")
@click.option(
    "--new-macs",
    is_flag=True,
    help="Let CloudStack choose MAC addresses (default: keep; a test never keeps them).",
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
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def start(
    vm: str,
    networks: tuple[str, ...],
    test: bool,
    test_network: str | None,
    auto_end: str | None,
    end_test: bool,
    offering: str,
    template: str | None,
    vm_name: str | None,
    new_macs: bool,
    graceful_timeout: int,
    no_force: bool,
    watch: bool,
    interval: float,
    as_json: bool,
) -> None:
    """Fail VM over to CloudStack (live: the source is powered off; --test: a copy boots
    beside the running source); prints the failover id."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_context, naming

    if test:
        body = _test_body(networks, test_network, auto_end, end_test, offering)
    else:
        for flag, value in (("--test-network", test_network), ("--auto-end", auto_end)):
            if value:
                raise click.UsageError(f"{flag} is only for a test failover (--test)")
        if not networks:
            raise click.UsageError("a live failover needs --network SRC=ID (repeat per network)")
        body = {
            "type": "live",
            "network_mappings": _mappings(networks),
            "service_offering_id": offering,
            "keep_macs": not new_macs,
            "graceful_timeout_s": graceful_timeout,
            "force": not no_force,
        }
        if end_test:
            body["end_test"] = True
    if template:
        body["template_id"] = template
    if vm_name:
        body["vm_name"] = vm_name
    with ApiClient() as api:
        ctx = find_context(api, vm)
        _cloudstack_ids(api, ctx, body)
        try:
            with naming(ctx):
                fo = api.post(f"vm-contexts/{ctx['id']}/failover", body)
        except CliError as exc:
            if exc.code == ExitCode.CONFLICT:
                exc.hint = (
                    "end the test first: `oma test-end VM`, or add --end-test"
                    if "test failover in place" in exc.message and not test
                    else "see `oma vms` (state) and `oma jobs --active --vm VM`"
                )
            raise
        path = "test-failovers" if test else "failovers"
        if as_json:
            echo_json(fo)
        else:
            verb = "resumed" if fo.get("resumed") else "requested"
            kind = "test failover" if test else "failover"
            click.echo(f"{kind} {fo['id']} {verb} for {ctx['name']} ({fo['status']})")
            if fo.get("test_end_id"):
                click.echo(f"the test failover ends first ({fo['test_end_id']})")
        if watch:
            finish(
                follow(api, fo["id"], interval=interval, path=path, vm=ctx["name"]), vm=ctx["name"]
            )
            return
        # a failover that fails at once (its first step) is reported, not left for later
        with CtrlC() as ctrl_c:
            ctrl_c.sleep(interval)
        fo = api.get(f"{path}/{fo['id']}")
        if fo["status"] == "failed":
            finish(fo, vm=ctx["name"])
        if not as_json:
            click.echo(fo["id"])


@command.command("show")
@click.argument("vm")
@click.option("--watch", is_flag=True, help="Follow the steps until the failover ends.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def show(vm: str, watch: bool, interval: float, as_json: bool) -> None:
    """Show VM's newest failover (live or test) step by step; --watch follows it."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import when
    from ._resolve import find_context

    with ApiClient() as api:
        ctx = find_context(api, vm)
        items = api.get(f"vm-contexts/{ctx['id']}/failovers")["items"]
        if not items:
            raise CliError(
                f"{ctx['name']} has no failover",
                hint="start one with `oma failover VM --network SRC=ID --offering ID`",
                code=ExitCode.NOT_FOUND,
            )
        path = "test-failovers" if items[0].get("type") == "test" else "failovers"
        fo = api.get(f"{path}/{items[0]['id']}")
        rollback = fo.get("rollback") or {}
        if watch:
            _watch_latest(api, fo, path, ctx["name"], interval=interval, as_json=as_json)
            return
    if as_json:
        echo_json(fo)
        return
    kind = "test failover" if fo.get("type") == "test" else "failover"
    click.echo(
        f"{kind} {fo['id']} of {ctx['name']}: {fo['status']} (started {when(fo.get('created_at'))})"
    )
    for step in fo["steps"]:
        click.echo(_step_line(step))
    if fo.get("error"):
        click.echo(f"  error: {fo['error']}")
    if rollback:
        click.echo(f"rollback: {rollback.get('status')}")
        for step in rollback.get("steps") or []:
            click.echo(_step_line(step))


def _watch_latest(
    api: Any, fo: dict[str, Any], path: str, vm: str, *, interval: float, as_json: bool
) -> None:
    """Follow a failover, or its rollback when one runs, to its end (``oma failover show
    --watch``: how a watch cut by Ctrl-C is taken up again)."""
    from . import rollback

    if (fo.get("rollback") or {}).get("status") not in (None, *rollback.TERMINAL):
        final = rollback.follow(api, fo["id"], interval=interval, vm=vm)
        echo_json(final) if as_json else rollback.finish(vm, final)
        return
    final = follow(api, fo["id"], interval=interval, path=path, vm=vm)
    echo_json(final) if as_json else finish(final, vm=vm)


def _cloudstack_ids(api: Any, ctx: dict[str, Any], body: dict[str, Any]) -> None:
    """Turn names and id prefixes of the offering, template and networks into CloudStack ids
    (the VM's target's, else the default target's); whole ids are sent as given."""
    from ._resolve import pick

    wanted = {
        "service_offering_id": ("offerings", "service offering"),
        "template_id": ("templates", "template"),
        "test_network_id": ("networks", "network"),
    }
    refs = [body.get(k) for k in wanted] + list((body.get("network_mappings") or {}).values())
    if all(_is_uuid(r) for r in refs if r):
        return
    target_id = ctx.get("cloudstack_target_id")
    if not target_id:
        targets = api.get("cloudstack-targets")["items"]
        chosen = [t for t in targets if t["is_default"]] or targets
        if len(chosen) != 1:
            return  # the API names what is missing
        target_id = chosen[0]["id"]
    lists: dict[str, list[dict[str, Any]]] = {}

    def resolve(ref: str, kind: str, what: str) -> str:
        if _is_uuid(ref):
            return ref
        if kind not in lists:
            lists[kind] = api.get(f"cloudstack-targets/{target_id}/{kind}")["items"]
        hint = f"`oma target {kind}`"
        return str(pick(lists[kind], ref, what=what, hint=hint, names=("name",))["id"])

    for key, (kind, what) in wanted.items():
        if body.get(key):
            body[key] = resolve(body[key], kind, what)
    for source, ref in list((body.get("network_mappings") or {}).items()):
        body["network_mappings"][source] = resolve(ref, "networks", "network")


def _is_uuid(text: str) -> bool:
    import re

    return bool(re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", text))


def _test_body(
    networks: tuple[str, ...],
    test_network: str | None,
    auto_end: str | None,
    end_test: bool,
    offering: str,
) -> dict[str, Any]:
    """The request of a test failover (usage errors for what a test does not take)."""
    if end_test:
        raise click.UsageError("--end-test is only for a live failover")
    if bool(networks) == bool(test_network):
        raise click.UsageError(
            "a test failover needs --network SRC=ID or --test-network ID (an isolated network), "
            "one of them"
        )
    body: dict[str, Any] = {"type": "test", "service_offering_id": offering}
    if networks:
        body["network_mappings"] = _mappings(networks)
    else:
        body["test_network_id"] = test_network
    if auto_end:
        body["auto_end_after"] = int(auto_end) if auto_end.isdigit() else auto_end
    return body


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


def follow(
    api: Any,
    failover_id: str,
    *,
    interval: float = 1.0,
    path: str = "failovers",
    steps_of: Any = None,
    done: Any = None,
    vm: str = "VM",
) -> dict[str, Any]:
    """Print a line whenever a step changes (status, or what it waits for) until the
    failover is terminal; return the final record. Ctrl-C raises KeyboardInterrupt whatever
    SIGINT disposition the process inherited (see :class:`oma.cli._watch.CtrlC`).

    ``path`` is ``failovers`` or ``test-failovers``; ``steps_of(record)`` picks the steps to
    show and ``done(record)`` says when to stop (default: the record's steps, a terminal
    status). Ctrl-C says that the work goes on and how to re-attach (``vm``)."""
    from ._errors import CliError, ExitCode

    seen: dict[str, tuple[Any, ...]] = {}
    try:
        with CtrlC() as ctrl_c:
            while True:
                fo = api.get(f"{path}/{failover_id}")
                ctrl_c.check()
                for step in steps_of(fo) if steps_of else fo["steps"]:
                    key = (step["status"], step.get("waiting_for"), step.get("error"))
                    if seen.get(step["name"], ("pending", None, None)) != key:
                        seen[step["name"]] = key
                        click.echo(_step_line(step))
                if done(fo) if done else fo["status"] in TERMINAL:
                    return fo
                ctrl_c.sleep(interval)
    except KeyboardInterrupt:
        again = (
            f"`oma failover show {vm} --watch`" if path != "workflows" else f"`oma vm show {vm}`"
        )
        raise CliError(
            f"cancelled; {failover_id} goes on in the worker",
            hint=f"re-attach with {again}",
            code=ExitCode.CANCELLED,
        ) from None


def finish(fo: dict[str, Any], vm: str = "VM") -> None:
    """Print the outcome of a finished failover and exit with its code (``vm`` names the VM
    in the hints)."""
    from ._errors import CliError, ExitCode
    from ._format import size

    if fo["status"] == "completed" and fo.get("type") == "test":
        result = fo.get("result") or {}
        click.echo(
            f"test failover {fo['id']} running: VM {result.get('test_vm_name')} "
            f"({result.get('test_vm_id')})"
            + (f", ends by itself at {fo['auto_end_at']}" if fo.get("auto_end_at") else "")
            + f"; end it with `oma test-end {vm}`"
        )
        return
    if fo["status"] == "completed":
        result = fo.get("result") or {}
        downtime = result.get("downtime_seconds")
        click.echo(
            f"failover {fo['id']} completed: target VM {result.get('target_vm_id')}, "
            f"downtime {downtime if downtime is not None else '-'} s, "
            f"final sync {size(result.get('final_sync_bytes'))}"
        )
        return
    if fo.get("type") == "test":
        raise CliError(
            f"test failover {fo['id']} {fo['status']}: {fo.get('error') or 'no error recorded'}",
            hint=f"end it to remove what it created: `oma test-end {vm}`",
            code=ExitCode.JOB_FAILED,
        )
    raise CliError(
        f"failover {fo['id']} {fo['status']}: {fo.get('error') or 'no error recorded'}",
        hint=f"fix the cause and resume it with `oma failover retry {vm}`, "
        f"or undo it with `oma failover rollback {vm}`",
        code=ExitCode.JOB_FAILED,
    )


def _register() -> None:
    from . import retry, rollback

    command.add_command(retry.command, "retry")
    command.add_command(rollback.command, "rollback")


_register()

__all__ = ["command", "finish", "follow"]
