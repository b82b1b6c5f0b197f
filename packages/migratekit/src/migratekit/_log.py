"""Event logging through ``migration_common.get_logger``, imported on first use.

``migration_common`` pulls in pydantic and requests when imported; resolving the logger
lazily keeps ``migratekit --help`` and the import of the copy modules light.
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """Forwards ``info/warning/error/exception/debug`` to a migration_common EventLogger."""

    def __init__(self, name: str, context: dict[str, Any]) -> None:
        self._name = name
        self._context = context
        self._logger: Any = None

    def _get(self) -> Any:
        if self._logger is None:
            from migration_common import get_logger as _get_logger

            self._logger = _get_logger(self._name, **self._context)
        return self._logger

    def debug(self, msg: str, **fields: Any) -> None:
        """Log at DEBUG with event fields."""
        self._get().debug(msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        """Log at INFO with event fields."""
        self._get().info(msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        """Log at WARNING with event fields."""
        self._get().warning(msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        """Log at ERROR with event fields."""
        self._get().error(msg, **fields)

    def exception(self, msg: str, **fields: Any) -> None:
        """Log at ERROR with the current traceback."""
        self._get().exception(msg, **fields)


def get_logger(name: str, **context: Any) -> LazyLogger:
    """A logger whose calls accept ``key=value`` fields (``context`` added to every line)."""
    return LazyLogger(name, context)
