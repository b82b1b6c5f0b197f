"""The ``migratekit`` command line: ``copy`` (one disk) and ``run`` (a plan from the VMA).

Each command lives in its own module; heavy imports happen inside the command functions so
``migratekit --help`` stays instant.
"""

from __future__ import annotations

import click

from .copy import copy_command
from .run import run_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="migratekit", prog_name="migratekit")
def main() -> None:
    """migratekit — copy VM disks between NBD exports (full or incremental), with progress.

    Environment: MIGRATEKIT_PROGRESS_TOKEN (bearer token for --progress-url),
    MIGRATEKIT_CONNECTIONS, MIGRATEKIT_REQUEST_SIZE, MIGRATEKIT_WINDOW, MIGRATEKIT_RETRIES,
    MIGRATEKIT_TIMEOUT, MIGRATEKIT_LOG_LEVEL, MIGRATEKIT_DEBUG.
    """


main.add_command(copy_command)
main.add_command(run_command)

__all__ = ["main"]
