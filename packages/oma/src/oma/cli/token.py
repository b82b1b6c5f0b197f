"""``oma token create|list|revoke``: API tokens (only their hash is stored)."""

from __future__ import annotations

import click

ROLES = ("admin", "operator", "viewer")


@click.group("token")
def command() -> None:
    """API token commands."""


@command.command("create")
@click.option("--name", required=True, help="Unique name of the token (who or what uses it).")
@click.option(
    "--role",
    required=True,
    type=click.Choice(ROLES),
    help="admin: everything; operator: replications and VMs; viewer: read-only.",
)
def create(name: str, role: str) -> None:
    """Create a token and print it as the last line (it cannot be shown again)."""
    from ..database import database
    from ..database.repos import tokens
    from ._server import bind_database, load

    config = load()
    bind_database(config)
    with database.connection_context():
        row, plain = tokens.create_token(name, role)
    # which database holds it: a token made in the wrong OMA_DATA_DIR would never work
    click.echo(f"stored in {database_location(config.database_url)}", err=True)
    click.echo(f"created {row.role} token {row.name!r}; it is shown only once:")
    click.echo(plain)


def database_location(url: str) -> str:
    """Where a database URL points, without credentials (a SQLite file's path)."""
    from urllib.parse import urlsplit

    if url.startswith("sqlite:///"):
        return f"the SQLite database {url.removeprefix('sqlite:///')}"
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"the {parts.scheme} database {parts.hostname}{port}{parts.path}"


@command.command("list")
def list_tokens() -> None:
    """List token names, roles and last use (never the tokens)."""
    from ..database import database
    from ..database.repos import tokens
    from ._server import bind_database, load

    bind_database(load())
    with database.connection_context():
        rows = tokens.list_tokens()
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        used = row.last_used_at.isoformat() if row.last_used_at else "never"
        click.echo(f"{row.name:<24} {row.role:<9} {state:<8} last used {used}")


@command.command("revoke")
@click.option("--name", required=True, help="Name of the token to revoke.")
def revoke(name: str) -> None:
    """Revoke a token by name."""
    from ..database import database
    from ..database.repos import tokens
    from ._errors import CliError, ExitCode
    from ._server import bind_database, load

    bind_database(load())
    with database.connection_context():
        if not tokens.revoke_token(name):
            raise CliError(
                f"no active token named {name!r}",
                hint="see `oma token list`",
                code=ExitCode.NOT_FOUND,
            )
    click.echo(f"revoked {name}")
