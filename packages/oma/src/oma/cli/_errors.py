"""CLI failures: one ``error:`` line, one ``hint:`` line, a named exit code.

Tracebacks are shown only with ``--debug`` or ``OMA_DEBUG=1``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the ``oma`` command (scripts may rely on them)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    UNREACHABLE = 4
    UNAUTHORIZED = 5
    NOT_FOUND = 6
    CONFLICT = 7
    REJECTED = 8
    JOB_FAILED = 9
    JOB_STOPPED = 10
    DATABASE = 11
    CANCELLED = 130


class CliError(Exception):
    """A failure to report as ``error: <message>`` + ``hint: <hint>`` with ``code``."""

    def __init__(
        self, message: str, *, hint: str | None = None, code: ExitCode = ExitCode.ERROR
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
