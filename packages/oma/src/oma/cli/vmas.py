"""``oma vma add|list|test|remove``: the VMware Migration Appliances the OMA works through."""

from __future__ import annotations

import click

from ._help import Group
from .enroll import attach as attach_enrollment


@click.group("vma", cls=Group)
def command() -> None:
    """VMware Migration Appliances: register (URL + token), list, test, remove."""


@command.command("add")
@click.argument("name")
@click.option("--url", required=True, help="Base URL of the VMA API, e.g. http://vma:8081.")
@click.option("--token-stdin", is_flag=True, help="Read the VMA's API token from standard input.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def add(name: str, url: str, token_stdin: bool, as_json: bool) -> None:
    """Register a VMA; its API token is prompted for (hidden) or read with --token-stdin."""
    from ._client import ApiClient
    from ._format import echo_json
    from ._secrets import read_secret

    token = read_secret("VMA API token", from_stdin=token_stdin, flag="--token-stdin")
    with ApiClient() as api:
        row = api.post("vma-appliances", {"name": name, "url": url, "token": token})
    if as_json:
        echo_json(row)
        return
    click.echo(f"VMA {row['name']} registered ({row['url']}); check it with `oma vma test {name}`")
    click.echo(row["id"])


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_vmas(as_json: bool) -> None:
    """List registered VMAs: name, URL, version, last seen, last error."""
    from ._client import ApiClient
    from ._format import echo_json, table, when

    with ApiClient() as api:
        items = api.get("vma-appliances")["items"]
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo("no VMAs (register one with `oma vma add NAME --url URL`)")
        return
    rows = [
        (v["name"], v["url"], v["version"], when(v["last_seen_at"]), v["last_error"], v["id"])
        for v in items
    ]
    click.echo(table(("NAME", "URL", "VERSION", "LAST SEEN", "LAST ERROR", "ID"), rows))


@command.command("test")
@click.argument("vma")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def test(vma: str, as_json: bool) -> None:
    """Check that the OMA reaches VMA and that the VMA accepts the stored token."""
    from ._client import ApiClient
    from ._errors import CliError, ExitCode
    from ._format import echo_json
    from ._resolve import find_vma

    with ApiClient() as api:
        row = find_vma(api, vma)
        result = api.post(f"vma-appliances/{row['id']}/test")
    if as_json:
        echo_json(result)
    if not result["ok"]:
        unauthorized = result.get("status") == 401
        raise CliError(
            f"VMA {row['name']} failed the test: {result.get('error')}",
            hint=(
                f"store the VMA's VMA_API_TOKEN again: `oma vma set {row['name']} --token`"
                if unauthorized
                else f"check that the VMA runs at {row['url']} and is reachable from the OMA"
            ),
            code=ExitCode.UNAUTHORIZED if unauthorized else ExitCode.UNREACHABLE,
        )
    if not as_json:
        version = (result.get("health") or {}).get("version") or "?"
        click.echo(f"VMA {row['name']} ok: version {version}, token accepted")


@command.command("set")
@click.argument("vma")
@click.option("--url", help="New base URL of the VMA API.")
@click.option("--token", "new_token", is_flag=True, help="Prompt for a new API token (hidden).")
@click.option("--token-stdin", is_flag=True, help="Read a new API token from standard input.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def set_vma(vma: str, url: str | None, new_token: bool, token_stdin: bool, as_json: bool) -> None:
    """Change VMA's URL and/or its stored API token (after the VMA's token was rotated)."""
    from ._client import ApiClient
    from ._format import echo_json
    from ._resolve import find_vma
    from ._secrets import read_secret

    body: dict[str, str] = {}
    if url:
        body["url"] = url
    if new_token or token_stdin:
        body["token"] = read_secret("VMA API token", from_stdin=token_stdin, flag="--token-stdin")
    if not body:
        raise click.UsageError("give --url, --token or --token-stdin")
    with ApiClient() as api:
        row = api.patch(f"vma-appliances/{find_vma(api, vma)['id']}", body)
    if as_json:
        echo_json(row)
        return
    click.echo(f"VMA {row['name']} updated; check it with `oma vma test {row['name']}`")


@command.command("remove")
@click.argument("vma")
def remove(vma: str) -> None:
    """Forget VMA (its VMs and jobs stay, without a VMA)."""
    from ._client import ApiClient
    from ._resolve import find_vma

    with ApiClient() as api:
        row = find_vma(api, vma)
        api.delete(f"vma-appliances/{row['id']}")
    click.echo(f"VMA {row['name']} removed")


attach_enrollment(command)  # oma vma enroll | revoke
