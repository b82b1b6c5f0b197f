"""The ``migratekit`` command line: ``copy`` (one disk) and ``run`` (a plan from the VMA).

Each command lives in its own module (``add_parser`` + ``main``); heavy imports happen inside
the command functions so ``migratekit --help`` stays instant. The parser is the standard
library's argparse rather than click: the VMA starts one migratekit per sync, and click's
import (~10 ms of a ~60 ms start-up, measured with ``python -X importtime``) was a visible
share of small copies — see the README's benchmark notes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _common, copy, run

ENVIRONMENT = """\
environment: MIGRATEKIT_PROGRESS_TOKEN (bearer token for --progress-url),
MIGRATEKIT_CONNECTIONS, MIGRATEKIT_REQUEST_SIZE, MIGRATEKIT_WINDOW, MIGRATEKIT_RETRIES,
MIGRATEKIT_TIMEOUT, MIGRATEKIT_FLUSH_EVERY, MIGRATEKIT_SPLICE, MIGRATEKIT_LOG_LEVEL,
MIGRATEKIT_DEBUG, MIGRATEKIT_CONFIG (a TOML file with the same settings)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``migratekit`` parser with its ``copy`` and ``run`` subcommands."""
    parser = _common.Parser(
        prog="migratekit",
        description="migratekit — copy VM disks between NBD exports (full or incremental), "
        "with progress.",
        epilog=ENVIRONMENT,
    )
    parser.add_argument("--version", action=_common.VersionAction, help="show the version and exit")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_common.Parser
    )
    copy.add_parser(commands)
    run.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; exits with its code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    args.main(args)


__all__ = ["build_parser", "main"]
