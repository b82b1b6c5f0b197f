"""``oma vma enroll`` and ``oma vma revoke``: a VMA joins with a one-time code, and leaves.

``enroll`` asks the API for a code (``POST /api/v1/vma-enrollments``) and prints it once, with
the OMA CA's fingerprint and the command to run on the VMA (the code goes there in a file, never
on a command line). ``revoke`` ends a VMA's access (``POST /vma-appliances/<id>/revoke``).
Both are subcommands of ``oma vma`` (:func:`attach`).
"""

from __future__ import annotations

import click


@click.command("enroll")
@click.argument("name")
@click.option("--url", required=True, help="The VMA API's https:// URL, e.g. https://vma:8081.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON (with the code).")
def enroll(name: str, url: str, as_json: bool) -> None:
    """Issue a one-time enrollment code for the VMA NAME at URL (valid OMA_ENROLLMENT_TTL)."""
    from ._client import ApiClient
    from ._format import echo_json

    with ApiClient() as api:
        created = api.post("vma-enrollments", {"name": name, "url": url})
        oma_url = api.url
    if as_json:
        echo_json(created)
        return
    click.echo(f"one-time enrollment code for VMA {name} (valid until {created['expires_at']}):")
    click.echo(f"  {created['code']}")
    click.echo(f"OMA CA fingerprint (SHA-256): {created['ca_fingerprint']}")
    click.echo("On the VMA, put the code in a file readable by the vma user only, then run:")
    click.echo(
        f"  vma-api-server enroll --oma {oma_url} --code-file CODE_FILE "
        f"--ca-fingerprint {created['ca_fingerprint']}"
    )
    click.echo("and restart vma-api-server. The code works once.")


@click.command("revoke")
@click.argument("vma")
def revoke(vma: str) -> None:
    """End VMA's access: the OMA stops calling it and its certificate is no longer admitted."""
    from ._client import ApiClient
    from ._resolve import find_vma

    with ApiClient() as api:
        row = find_vma(api, vma)
        api.post(f"vma-appliances/{row['id']}/revoke")
    click.echo(
        f"VMA {row['name']} revoked; enroll it again (`oma vma enroll {row['name']} --url …`) "
        "to restore it"
    )


def attach(group: click.Group) -> None:
    """Add ``enroll`` and ``revoke`` to the ``oma vma`` group."""
    group.add_command(enroll)
    group.add_command(revoke)
