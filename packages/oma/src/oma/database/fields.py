"""Portable field types: UUID-string keys, JSON text and UTC timestamps.

The same schema must work on SQLite, PostgreSQL and MariaDB, so JSON is stored as text and
timestamps as naive UTC ``DATETIME`` values that come back timezone-aware.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from peewee import CharField, DateTimeField, TextField


def new_id() -> str:
    """A new UUID4 string (the OMA's ID format)."""
    return str(uuid.uuid4())


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UUIDStrField(CharField):
    """A UUID kept as its 36-character string."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 36)
        super().__init__(*args, **kwargs)


class JSONField(TextField):
    """A JSON document stored as text."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True, default=str)

    def python_value(self, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, dict | list):
            return value
        return orjson.loads(value)


class UtcDateTimeField(DateTimeField):
    """A timestamp stored as naive UTC and returned timezone-aware.

    Its column type ``UTCDATETIME`` is mapped per database by ``db.connect_database``
    (``DATETIME(6)`` on MariaDB so microseconds survive, ``TIMESTAMP`` on PostgreSQL).
    """

    field_type = "UTCDATETIME"

    def db_value(self, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value: Any) -> Any:
        if isinstance(value, str):  # SQLite's text: ISO 8601, parsed without strptime
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                value = super().python_value(value)
        else:
            value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value
