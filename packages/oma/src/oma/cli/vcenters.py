"""``oma vcenter add|list|test|remove``: saved vCenter logins (the password stored encrypted)."""

from __future__ import annotations

import click

from ._help import Group


@click.group("vcenter", cls=Group)
def command() -> None:
    """vCenter logins used for discovery and replication: add, list, test, remove."""


@command.command("add")
@click.argument("name")
@click.option("--host", "vcenter", required=True, help="vCenter host name or URL.")
@click.option("--username", required=True, help="vCenter user, e.g. administrator@vsphere.local.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--datacenter", help="Datacenter to discover in (default: every one).")
@click.option("--insecure", is_flag=True, help="Do not verify vCenter's TLS certificate.")
@click.option("--default", "is_default", is_flag=True, help="Use it when none is named.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def add(
    name: str,
    vcenter: str,
    username: str,
    password_stdin: bool,
    datacenter: str | None,
    insecure: bool,
    is_default: bool,
    as_json: bool,
) -> None:
    """Save a vCenter login; the password is prompted for (hidden) or read with
    --password-stdin."""
    from ._client import ApiClient
    from ._format import echo_json
    from ._secrets import read_secret

    password = read_secret("vCenter password", from_stdin=password_stdin, flag="--password-stdin")
    body = {
        "name": name,
        "vcenter": vcenter,
        "username": username,
        "password": password,
        "insecure": insecure,
        "is_default": is_default,
    }
    if datacenter:
        body["datacenter"] = datacenter
    with ApiClient() as api:
        row = api.post("vmware-credentials", body)
    if as_json:
        echo_json(row)
        return
    click.echo(f"vCenter login {row['name']} saved; check it with `oma vcenter test {name}`")
    click.echo(row["id"])


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_vcenters(as_json: bool) -> None:
    """List saved vCenter logins (never the password)."""
    from ._client import ApiClient
    from ._format import echo_json, table

    with ApiClient() as api:
        items = api.get("vmware-credentials")["items"]
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo("no vCenter logins (add one with `oma vcenter add NAME --host H --username U`)")
        return
    rows = [
        (
            c["name"],
            c["vcenter"],
            c["username"],
            c["datacenter"],
            "yes" if c["is_default"] else "",
            c["id"],
        )
        for c in items
    ]
    click.echo(table(("NAME", "VCENTER", "USERNAME", "DATACENTER", "DEFAULT", "ID"), rows))


@command.command("test")
@click.argument("vcenter")
@click.option("--vma", help="VMA to log in through (default: the only one).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def test(vcenter: str, vma: str | None, as_json: bool) -> None:
    """Log in to vCenter through a VMA and count its VMs."""
    from ._client import ApiClient
    from ._format import echo_json
    from ._resolve import find_vcenter, find_vma

    with ApiClient() as api:
        row = find_vcenter(api, vcenter)
        body = {"credential_id": row["id"]}
        if vma:
            body["vma_id"] = find_vma(api, vma)["id"]
        found = api.post("discovery", body)
    if as_json:
        echo_json({"ok": True, "vcenter": found["vcenter"], "vm_count": len(found["vms"])})
        return
    click.echo(f"vCenter {row['name']} ok: {len(found['vms'])} VMs at {found['vcenter']}")


@command.command("remove")
@click.argument("vcenter")
def remove(vcenter: str) -> None:
    """Delete a saved vCenter login."""
    from ._client import ApiClient
    from ._resolve import find_vcenter

    with ApiClient() as api:
        row = find_vcenter(api, vcenter)
        api.delete(f"vmware-credentials/{row['id']}")
    click.echo(f"vCenter login {row['name']} removed")
