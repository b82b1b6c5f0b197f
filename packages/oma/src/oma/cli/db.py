"""``oma db upgrade`` / ``oma db status``: numbered schema migrations."""

from __future__ import annotations

import click


@click.group("db")
def command() -> None:
    """Database schema commands."""


@command.command("upgrade")
def upgrade() -> None:
    """Apply every pending schema migration (safe to run repeatedly)."""
    from ..database import dialect
    from ._server import bind_database, load

    config = load()
    applied = bind_database(config, upgrade=True)
    where = dialect(config.database_url)
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
        click.echo(f"database ({where}) is at {applied[-1]}")
    else:
        click.echo(f"database ({where}) is up to date")


@command.command("status")
def status() -> None:
    """List applied and pending migrations; exit 1 when some are pending."""
    from ..database import applied, pending
    from ._server import bind_database, load

    bind_database(load(), upgrade=False, require_current=False)
    for name in applied():
        click.echo(f"[x] {name}")
    todo = pending()
    for name in todo:
        click.echo(f"[ ] {name}")
    if todo:
        raise SystemExit(1)
