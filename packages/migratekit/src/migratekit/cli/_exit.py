"""Named exit codes and the one place that turns errors into a one-line message."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

OK = 0
COPY_FAILED = 1
USAGE = 2
VERIFY_FAILED = 3
CANCELLED = 130
TERMINATED = 143


def fail(message: str, hint: str | None, code: int) -> NoReturn:
    """Print ``error: …`` (and ``hint: …``) to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    sys.exit(code)


class Debug:
    """Whether tracebacks are shown (``--debug``, or MIGRATEKIT_DEBUG once config is read)."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __bool__(self) -> bool:
        return self.on


@contextlib.contextmanager
def errors_to_exit(debug: bool = False) -> Iterator[Debug]:
    """Map our errors to one clear line and a named exit code (tracebacks only in debug)."""
    from migration_common import ConfigError

    from ..errors import MigrateKitError, NbdError, UsageError

    flag = Debug(debug)
    try:
        yield flag
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        sys.exit(CANCELLED)
    except (UsageError, ConfigError) as exc:
        if flag:
            raise
        fail(str(exc), "check the arguments and the plan (see migratekit --help)", USAGE)
    except NbdError as exc:
        if flag:
            raise
        fail(str(exc), "is the NBD server running and the export name right?", COPY_FAILED)
    except MigrateKitError as exc:
        if flag:
            raise
        fail(str(exc), None, COPY_FAILED)
