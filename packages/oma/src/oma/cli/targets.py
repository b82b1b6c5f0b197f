"""``oma target add|list|test|offerings|networks|templates|remove``: CloudStack targets."""

from __future__ import annotations

from typing import Any

import click

from ._help import Group


@click.group("target", cls=Group)
def command() -> None:
    """CloudStack targets: add, list, test, and what failover picks from (offerings,
    networks, templates)."""


@command.command("add")
@click.argument("name")
@click.option(
    "--endpoint", required=True, help="CloudStack API URL, e.g. http://cs:8080/client/api."
)
@click.option("--api-key", required=True, help="CloudStack API key (the secret key is prompted).")
@click.option("--secret-key-stdin", is_flag=True, help="Read the secret key from standard input.")
@click.option("--zone", "zone_id", required=True, help="Zone id the replicas and VMs go to.")
@click.option("--oma-vm", "oma_vm_id", required=True, help="CloudStack id of the OMA's own VM.")
@click.option("--disk-offering", "disk_offering_id", help="Disk offering id of the replicas.")
@click.option("--no-verify-tls", is_flag=True, help="Do not verify the endpoint's certificate.")
@click.option("--default", "is_default", is_flag=True, help="Use it when none is named.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def add(
    name: str,
    endpoint: str,
    api_key: str,
    secret_key_stdin: bool,
    zone_id: str,
    oma_vm_id: str,
    disk_offering_id: str | None,
    no_verify_tls: bool,
    is_default: bool,
    as_json: bool,
) -> None:
    """Save a CloudStack target; its secret key is prompted for (hidden) or read with
    --secret-key-stdin."""
    from ._client import ApiClient
    from ._format import echo_json
    from ._secrets import read_secret

    secret = read_secret(
        "CloudStack secret key", from_stdin=secret_key_stdin, flag="--secret-key-stdin"
    )
    body: dict[str, Any] = {
        "name": name,
        "endpoint": endpoint,
        "api_key": api_key,
        "secret_key": secret,
        "zone_id": zone_id,
        "oma_vm_id": oma_vm_id,
        "verify_tls": not no_verify_tls,
        "is_default": is_default,
    }
    if disk_offering_id:
        body["disk_offering_id"] = disk_offering_id
    with ApiClient() as api:
        row = api.post("cloudstack-targets", body)
    if as_json:
        echo_json(row)
        return
    click.echo(f"target {row['name']} saved; check it with `oma target test {name}`")
    click.echo(row["id"])


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_targets(as_json: bool) -> None:
    """List CloudStack targets (the API key masked, never the secret key)."""
    from ._client import ApiClient
    from ._format import echo_json, table

    with ApiClient() as api:
        items = api.get("cloudstack-targets")["items"]
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo("no targets (add one with `oma target add NAME --endpoint URL ...`)")
        return
    rows = [
        (
            t["name"],
            t["endpoint"],
            t["zone_id"],
            t["disk_offering_id"],
            "yes" if t["is_default"] else "",
            t["id"],
        )
        for t in items
    ]
    click.echo(table(("NAME", "ENDPOINT", "ZONE", "DISK OFFERING", "DEFAULT", "ID"), rows))


def _target(ref: str | None) -> tuple[Any, dict[str, Any]]:
    """An API client and the target ``ref`` names (default: the default or only one)."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._resolve import find_target

    api = ApiClient()
    try:
        if ref:
            return api, find_target(api, ref)
        items = api.get("cloudstack-targets")["items"]
        chosen = [t for t in items if t["is_default"]] or items
        if len(chosen) != 1:
            raise CliError(
                "name the target" if items else "no CloudStack target yet",
                hint="see `oma target list`" if items else "add one with `oma target add`",
                code=ExitCode.USAGE if items else ExitCode.NOT_FOUND,
            )
        return api, chosen[0]
    except BaseException:
        api.close()
        raise


@command.command("test")
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def test(target: str | None, as_json: bool) -> None:
    """Check TARGET's endpoint and keys, its zone, the OMA VM and the disk offering."""
    from ._errors import CliError, ExitCode
    from ._format import echo_json

    api, row = _target(target)
    with api:
        result = api.post(f"cloudstack-targets/{row['id']}/test")
    if as_json:
        echo_json(result)
    offering = result.get("disk_offering") or {}
    if not as_json:
        for note in offering.get("notes") or []:
            click.echo(f"note: {note}")
    if not result["ok"]:
        suggested = offering.get("suggested")
        raise CliError(
            f"target {row['name']} failed the test: {result.get('error')}",
            hint=(
                f"pick a disk offering from `oma target offerings {row['name']}`"
                + (f" (suggested: {suggested})" if suggested else "")
                if offering.get("problems")
                else "check the endpoint, keys, zone and OMA VM id: `oma target list`"
            ),
            code=ExitCode.REJECTED,
        )
    if not as_json:
        vm = result.get("oma_vm") or {}
        click.echo(
            f"target {row['name']} ok: {len(result.get('zones') or [])} zones, "
            f"OMA VM {vm.get('name')} {vm.get('state')}"
        )


@command.command("offerings")
@click.argument("target", required=False)
@click.option("--disk", is_flag=True, help="Disk offerings (for replicas) instead of service ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def offerings(target: str | None, disk: bool, as_json: bool) -> None:
    """Service offerings of TARGET (for `oma failover --offering`), or --disk offerings."""
    from ._format import echo_json, size, table

    api, row = _target(target)
    with api:
        result = api.get(f"cloudstack-targets/{row['id']}/offerings")
    if as_json:
        echo_json(result)
        return
    if disk:
        rows = [
            (
                o.get("name"),
                size((o.get("disksize") or 0) << 30) if o.get("disksize") else "custom",
                "; ".join(o.get("replica_problems") or []) or "ok",
                o.get("id"),
            )
            for o in result["disk_offerings"]
        ]
        click.echo(table(("NAME", "SIZE", "FOR REPLICAS", "ID"), rows))
        return
    rows = [
        (o.get("name"), o.get("cpunumber"), size((o.get("memory") or 0) << 20), o.get("id"))
        for o in result["items"]
    ]
    click.echo(table(("NAME", "CPUS", "MEMORY", "ID"), rows))


@command.command("networks")
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def networks(target: str | None, as_json: bool) -> None:
    """Networks of TARGET's zone (for `oma failover --network SRC=ID`)."""
    from ._format import echo_json, table

    api, row = _target(target)
    with api:
        items = api.get(f"cloudstack-targets/{row['id']}/networks")["items"]
    if as_json:
        echo_json(items)
        return
    rows = [
        (n.get("name"), n.get("cidr"), n.get("type"), n.get("state"), n.get("id")) for n in items
    ]
    click.echo(table(("NAME", "CIDR", "TYPE", "STATE", "ID"), rows))


@command.command("templates")
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def templates(target: str | None, as_json: bool) -> None:
    """Executable templates of TARGET's zone (for `oma failover --template`)."""
    from ._format import echo_json, table

    api, row = _target(target)
    with api:
        items = api.get(f"cloudstack-targets/{row['id']}/templates")["items"]
    if as_json:
        echo_json(items)
        return
    rows = [(t.get("name"), t.get("ostypename"), t.get("id")) for t in items]
    click.echo(table(("NAME", "OS TYPE", "ID"), rows))


@command.command("remove")
@click.argument("target")
def remove(target: str) -> None:
    """Delete a CloudStack target."""
    api, row = _target(target)
    with api:
        api.delete(f"cloudstack-targets/{row['id']}")
    click.echo(f"target {row['name']} removed")
