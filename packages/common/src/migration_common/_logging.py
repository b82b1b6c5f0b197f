"""Logging setup: one line per event, ``key=value`` or JSON, secrets redacted.

Use :func:`get_logger` and pass context as keyword arguments::

    log = get_logger(__name__)
    log.info("disk copied", job_id=job_id, disk_key="2000", bytes=1024)

Any field whose name looks secret (password, secret, token, key, authorization) is
replaced by ``***``; so is any value registered with :func:`register_secret`, wherever it
appears in the message or a field.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

from ._time import rfc3339, utcnow

_SECRET_NAME = re.compile(r"(pass(word)?|secret|token|api_?key|secret_?key|authorization)", re.I)
_REDACTED = "***"
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is redacted from every log line from now on."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+", r"\1" + _REDACTED, text)


def redact_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``fields`` with secret-looking names masked and secret values redacted."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if _SECRET_NAME.search(key) and value not in (None, ""):
            out[key] = _REDACTED
        elif isinstance(value, Mapping):
            out[key] = redact_fields(value)
        elif isinstance(value, str):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


class EventLogger(logging.LoggerAdapter):
    """A logger adapter that takes event fields as keyword arguments."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in _LOG_KWARGS}
        extra = dict(self.extra or {})
        extra.update(fields)
        kwargs["extra"] = {"fields": extra}
        return msg, kwargs


_LOG_KWARGS = {"exc_info", "stack_info", "stacklevel", "extra"}


def get_logger(name: str, **context: Any) -> EventLogger:
    """A logger whose calls accept ``key=value`` fields; ``context`` is added to every line."""
    return EventLogger(logging.getLogger(name), context)


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' ="\n'):
        return json.dumps(text)
    return text


class EventFormatter(logging.Formatter):
    """Formats a record as one ``key=value`` line, or one JSON object when ``json_lines``."""

    def __init__(self, json_lines: bool = False) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields = redact_fields(getattr(record, "fields", {}) or {})
        event = {
            "ts": rfc3339(utcnow()),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
            **fields,
        }
        if record.exc_info:
            event["exc"] = redact(self.formatException(record.exc_info))
        if self.json_lines:
            return json.dumps(event, default=str)
        line = " ".join(f"{k}={_quote(v)}" for k, v in event.items() if k != "exc")
        if "exc" in event:
            line += " exc=" + json.dumps(event["exc"])
        return line


def setup_logging(
    level: str | int = "INFO",
    *,
    json_lines: bool = False,
    stream: IO[str] | None = None,
    filename: str | None = None,
) -> logging.Handler:
    """Configure the root logger with one redacting handler; returns that handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_migration_common", False):
            root.removeHandler(handler)
            handler.close()
    if filename:
        handler: logging.Handler = logging.FileHandler(filename, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EventFormatter(json_lines=json_lines))
    handler._migration_common = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    return handler
