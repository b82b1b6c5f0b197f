"""The `oma` command line (commands are added by later issues)."""

from __future__ import annotations

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="oma")
def main() -> None:
    """oma command line."""
