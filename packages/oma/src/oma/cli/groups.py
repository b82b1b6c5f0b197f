"""``oma groups``: machine groups (waves) — list, show, add, set, remove, add-vms, remove-vm."""

from __future__ import annotations

from typing import Any

import click

from ._client import ApiClient
from ._errors import CliError


def find_group(api: ApiClient, ref: str) -> dict[str, Any]:
    """The group named ``ref`` (its name, id or a unique id prefix)."""
    from ._resolve import find

    return find(api, "groups", ref, what="group", hint="`oma groups list`")


def _show(group: dict[str, Any]) -> None:
    from ._format import table

    limit = group["max_concurrent"] or "no limit"
    click.echo(
        f"group {group['name']}  priority {group['priority']}  max concurrent {limit}  "
        f"id {group['id']}"
    )
    rows = [
        (m["name"], m["state"], m["active_job_id"], m["vm_context_id"]) for m in group["members"]
    ]
    click.echo(table(("VM", "STATE", "ACTIVE JOB", "ID"), rows) if rows else "no VMs")


@click.group("groups")
def command() -> None:
    """Machine groups: VMs replicated as a wave, admitted by priority, capped per group."""


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_groups(as_json: bool) -> None:
    """List groups, highest priority first."""
    import json

    from ._format import table

    with ApiClient() as api:
        items = api.get("groups")["items"]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no groups (create one with `oma groups add NAME`)")
        return
    rows = [
        (g["name"], g["priority"], g["max_concurrent"] or "-", g["member_count"], g["id"])
        for g in items
    ]
    click.echo(table(("NAME", "PRIORITY", "MAX CONCURRENT", "VMS", "ID"), rows))


@command.command("show")
@click.argument("group")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def show(group: str, as_json: bool) -> None:
    """Show a group and its VMs."""
    import json

    with ApiClient() as api:
        row = api.get(f"groups/{find_group(api, group)['id']}")
    click.echo(json.dumps(row, indent=2)) if as_json else _show(row)


@command.command("add")
@click.argument("name")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher goes first.")
@click.option(
    "--max-concurrent", type=click.IntRange(0), default=0, help="Jobs at once (0: no limit)."
)
@click.option("--vm", "vms", multiple=True, help="A VM to add (name or id; repeatable).")
def add(name: str, priority: int, max_concurrent: int, vms: tuple[str, ...]) -> None:
    """Create a group, optionally with VMs."""
    from ._resolve import find_context

    with ApiClient() as api:
        ids = [find_context(api, ref)["id"] for ref in vms]
        body = {"name": name, "priority": priority, "max_concurrent": max_concurrent}
        row = api.post("groups", {**body, **({"vm_context_ids": ids} if ids else {})})
    _show(row)


@command.command("set")
@click.argument("group")
@click.option("--name", help="A new name.")
@click.option("--priority", type=int, help="Higher goes first.")
@click.option("--max-concurrent", type=click.IntRange(0), help="Jobs at once (0: no limit).")
def set_group(
    group: str, name: str | None, priority: int | None, max_concurrent: int | None
) -> None:
    """Change a group's name, priority or concurrency cap."""
    body = {
        k: v
        for k, v in (("name", name), ("priority", priority), ("max_concurrent", max_concurrent))
        if v is not None
    }
    if not body:
        raise CliError("nothing to change", hint="give --name, --priority or --max-concurrent")
    with ApiClient() as api:
        row = api.patch(f"groups/{find_group(api, group)['id']}", body)
    _show(row)


@command.command("remove")
@click.argument("group")
def remove(group: str) -> None:
    """Delete a group (its VMs stay managed)."""
    with ApiClient() as api:
        row = find_group(api, group)
        api.delete(f"groups/{row['id']}")
    click.echo(f"group {row['name']} deleted")


@command.command("add-vms")
@click.argument("group")
@click.argument("vms", nargs=-1, required=True)
def add_vms(group: str, vms: tuple[str, ...]) -> None:
    """Add VMs (names or ids) to a group; a VM belongs to at most one group."""
    from ._resolve import find_context

    with ApiClient() as api:
        gid = find_group(api, group)["id"]
        ids = [find_context(api, ref)["id"] for ref in vms]
        row = api.post(f"groups/{gid}/members", {"vm_context_ids": ids})
    _show(row)


@command.command("remove-vm")
@click.argument("group")
@click.argument("vm")
def remove_vm(group: str, vm: str) -> None:
    """Take a VM out of a group."""
    from ._resolve import find_context

    with ApiClient() as api:
        row = find_group(api, group)
        ctx = find_context(api, vm)
        api.delete(f"groups/{row['id']}/members/{ctx['id']}")
    click.echo(f"{ctx['name']} removed from group {row['name']}")
