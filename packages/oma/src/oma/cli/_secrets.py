"""Secrets the operator types (tokens, passwords, keys): from a hidden prompt or one line of
standard input, never from the command line (where ``ps`` and shell history would keep it)."""

from __future__ import annotations

import sys

import click

from ._errors import CliError, ExitCode


def read_secret(label: str, *, from_stdin: bool, flag: str) -> str:
    """``label`` read from stdin's first line (``from_stdin``) or a hidden prompt on a TTY."""
    if from_stdin:
        value = sys.stdin.readline().strip()
    elif sys.stdin.isatty():
        value = click.prompt(label, hide_input=True).strip()
    else:
        raise CliError(
            f"no {label} given (standard input is not a terminal to prompt on)",
            hint=f"pipe it in and add {flag}",
            code=ExitCode.USAGE,
        )
    if not value:
        raise CliError(
            f"the {label} is empty", hint=f"pipe it in and add {flag}", code=ExitCode.USAGE
        )
    from migration_common import register_secret

    register_secret(value)
    return value


def mask(secret: str | None) -> str:
    """A secret shown by its last four characters only (``****wxyz``)."""
    if not secret:
        return "-"
    return "****" + secret[-4:] if len(secret) > 8 else "****"
