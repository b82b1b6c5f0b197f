"""The ``oma`` command line: one module per command, heavy imports inside the commands.

Server commands (``serve``, ``worker``, ``db``, ``token``) use the OMA configuration
(``OMA_*``); operator commands (``vms``, ``replicate``, ``jobs``, ``job``, ``failover``,
``test-end``, ``groups``, ``schedules``) call the API over HTTP with ``OMA_URL`` and
``OMA_TOKEN``. Every failure prints ``error: …`` and ``hint: …`` and exits with a code from
:class:`oma.cli._errors.ExitCode`; Ctrl-C prints ``cancelled`` and exits 130.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ._errors import CliError, ExitCode
from ._help import Group

# commands that read the OMA's own settings (OMA_*), not a profile's URL and token
SERVER_COMMANDS = frozenset({"serve", "worker", "db", "token", "config"})


class _Group(Group):
    """A click group that turns our errors, config errors and Ctrl-C into one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except CliError as exc:
            _fail(exc, debug)
        except KeyboardInterrupt:
            click.echo("cancelled", err=True)
            sys.exit(ExitCode.CANCELLED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            _fail(_translate(exc), debug, exc)


def _translate(exc: Exception) -> CliError:
    from migration_common import ConfigError

    from ..errors import ConflictError, NotFoundError, OmaError

    if isinstance(exc, ConfigError):
        return CliError(
            f"invalid setting {exc.variable}: {exc.reason}",
            hint=f"fix {exc.variable} in the environment or the OMA_CONFIG file",
            code=ExitCode.CONFIG,
        )
    if isinstance(exc, NotFoundError):
        return CliError(str(exc), code=ExitCode.NOT_FOUND)
    if isinstance(exc, ConflictError):
        return CliError(str(exc), code=ExitCode.CONFLICT)
    if isinstance(exc, OmaError):
        return CliError(str(exc))
    try:
        from peewee import OperationalError

        if isinstance(exc, OperationalError):
            return CliError(
                f"database unavailable ({exc})".replace("\n", " "),
                hint="check OMA_DATABASE_URL and that the database server runs",
                code=ExitCode.DATABASE,
            )
    except ImportError:  # pragma: no cover
        pass
    return CliError(
        f"{type(exc).__name__}: {exc}".replace("\n", " "),
        hint="run again with --debug (or OMA_DEBUG=1) for the traceback",
    )


def _fail(err: CliError, debug: bool, cause: BaseException | None = None) -> None:
    from migration_common import redact

    if debug and cause is not None:
        import traceback

        traceback.print_exception(cause)
    prefix = "" if err.code == ExitCode.CANCELLED else "error: "
    click.echo(f"{prefix}{redact(err.message)}", err=True)
    if err.hint:
        click.echo(f"hint: {err.hint}", err=True)
    sys.exit(err.code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="oma", prog_name="oma")
@click.option(
    "--debug",
    is_flag=True,
    envvar="OMA_DEBUG",
    help="Show tracebacks for errors (also OMA_DEBUG=1).",
)
@click.option(
    "--profile",
    envvar="OMA_PROFILE",
    help="Profile of the CLI config file to take URL and token from (see `oma config`).",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, profile: str | None) -> None:
    """OSSEA Migration Appliance: API server, worker, database and operator commands.

    Operator commands take the OMA's URL and token from OMA_URL and OMA_TOKEN, else from a
    profile (`oma config set NAME --url URL`). Wherever a VM, job, VMA, vCenter or target is
    named, its name, its id or a unique prefix of its id (4 characters or more) is accepted.
    Shell completion: eval "$(_OMA_COMPLETE=bash_source oma)" (zsh_source, fish_source).
    """
    if ctx.invoked_subcommand and ctx.invoked_subcommand not in SERVER_COMMANDS:
        from .profiles import apply_profile

        apply_profile(profile)


def _register() -> None:
    from . import (
        bandwidth,
        cleanup,
        db,
        discover,
        failover,
        groups,
        job,
        jobs,
        profiles,
        replicate,
        retry,
        rollback,
        schedules,
        serve,
        stop,
        targets,
        test_end,
        token,
        vcenters,
        vm,
        vmas,
        vms,
        worker,
    )

    for module in (
        serve,
        worker,
        db,
        token,
        profiles,
        vmas,
        vcenters,
        targets,
        discover,
        vms,
        vm,
        replicate,
        jobs,
        job,
        failover,
        test_end,
        rollback,
        retry,
        stop,
        cleanup,
        groups,
        schedules,
        bandwidth,
    ):
        main.add_command(module.command)


_register()

__all__ = ["CliError", "ExitCode", "main"]
