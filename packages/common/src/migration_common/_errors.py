"""Errors raised by migration_common.

::

    MigrationCommonError            base of everything this package raises
    ├── ContractError               a progress/job payload violates the contract (names the field)
    ├── ConfigError                 a setting is missing or invalid (names the variable)
    └── HttpError                   an HTTP call failed (method, URL, status, body excerpt)
        └── HttpConnectionError     no HTTP answer at all (refused, reset, timed out)
"""

from __future__ import annotations


class MigrationCommonError(Exception):
    """Base class of every error raised by migration_common."""


class ContractError(MigrationCommonError, ValueError):
    """A payload does not satisfy the progress/job contract; ``field`` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class ConfigError(MigrationCommonError, ValueError):
    """A configuration value is missing or invalid; ``variable`` names the setting."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.reason = message


class HttpError(MigrationCommonError):
    """An HTTP request got an error status (or no usable answer)."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None = None,
        body: str = "",
    ) -> None:
        detail = f"{method} {url}"
        if status is not None:
            detail += f" -> HTTP {status}"
        if body:
            detail += f": {body[:300]}"
        super().__init__(f"{message} ({detail})")
        self.method = method
        self.url = url
        self.status = status
        self.body = body


class HttpConnectionError(HttpError):
    """The server could not be reached: connection refused or reset, or a timeout."""
