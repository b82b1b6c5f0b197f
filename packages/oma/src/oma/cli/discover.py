"""``oma discover [--add NAME…]``: a vCenter's VMs as a VMA sees them; add some to management.

Calls ``POST /api/v1/discovery`` (list) and ``POST /api/v1/discovery/add`` with the VMs'
VMware ids (the OMA discovers them again and creates one VM context per VM).
"""

from __future__ import annotations

from typing import Any

import click


@click.command("discover")
@click.option("--vma", help="VMA to discover through (default: the only one).")
@click.option("--vcenter", help="Saved vCenter login to use (default: the default login).")
@click.option(
    "--add",
    "add_names",
    multiple=True,
    metavar="NAME",
    help="Add this VM (its name or VMware id) to management; repeatable.",
)
@click.option("--all", "add_all", is_flag=True, help="Add every VM not yet managed.")
@click.option("--target", help="CloudStack target of the added VMs (default: the default one).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def command(
    vma: str | None,
    vcenter: str | None,
    add_names: tuple[str, ...],
    add_all: bool,
    target: str | None,
    as_json: bool,
) -> None:
    """List the VMs of a vCenter (through a VMA); --add NAME puts VMs under management."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_target, find_vcenter, find_vma

    with ApiClient() as api:
        body: dict[str, Any] = {}
        if vma:
            body["vma_id"] = find_vma(api, vma)["id"]
        if vcenter:
            body["credential_id"] = find_vcenter(api, vcenter)["id"]
        found = api.post("discovery", body)
        if not add_names and not add_all:
            if as_json:
                echo_json(found)
            else:
                _list(found["vms"])
            return
        wanted = _choose(found["vms"], add_names, add_all)
        if not wanted:
            raise CliError(
                "every VM of the vCenter is managed already",
                hint="see `oma vms`",
                code=ExitCode.CONFLICT,
            )
        add_body = {**body, "vma_id": found["vma_id"], "vm_ids": [vm["id"] for vm in wanted]}
        if target:
            add_body["cloudstack_target_id"] = find_target(api, target)["id"]
        result = api.post("discovery/add", add_body)
    if as_json:
        echo_json(result)
        return
    for ctx in result["added"]:
        click.echo(
            f"added {ctx['name']} ({ctx['id']}); replicate it with `oma replicate {ctx['name']}`"
        )
    for skipped in result["skipped"]:
        click.echo(f"skipped {skipped['name']}: {skipped['reason']}")


def _choose(
    vms: list[dict[str, Any]], names: tuple[str, ...], add_all: bool
) -> list[dict[str, Any]]:
    """The discovered VMs named (by name or VMware id), or every unmanaged one with --all."""
    from ._errors import CliError, ExitCode

    if add_all:
        return [vm for vm in vms if not vm.get("vm_context_id")]
    chosen = []
    for name in dict.fromkeys(names):
        matches = [vm for vm in vms if name in (vm.get("name"), vm.get("id"))]
        if not matches:
            raise CliError(
                f"no VM named {name!r} in the vCenter",
                hint="see the names with `oma discover`",
                code=ExitCode.NOT_FOUND,
            )
        if len(matches) > 1:
            raise CliError(
                f"{len(matches)} VMs are named {name!r}",
                hint="add it by its VMware id (`oma discover --json`)",
                code=ExitCode.CONFLICT,
            )
        chosen.append(matches[0])
    return chosen


def _list(vms: list[dict[str, Any]]) -> None:
    from ._format import size, table

    if not vms:
        click.echo("no VMs in the vCenter")
        return
    rows = [
        (
            vm.get("name"),
            vm.get("power_state"),
            vm.get("cpus"),
            size((vm.get("memory_mb") or 0) << 20) if vm.get("memory_mb") else None,
            len(vm.get("disks") or []),
            size(sum(d.get("capacity_bytes") or 0 for d in vm.get("disks") or [])),
            "yes" if vm.get("vm_context_id") else "no",
            vm.get("id"),
        )
        for vm in vms
    ]
    click.echo(
        table(("NAME", "POWER", "CPUS", "MEMORY", "DISKS", "SIZE", "MANAGED", "VMWARE ID"), rows)
    )
