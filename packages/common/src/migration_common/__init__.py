"""migration_common — the lean contract shared by migratekit, the VMA and the OMA.

It holds the progress and job models (one status enum, one phase enum), configuration
loading, logging setup with secret redaction, and the JSON HTTP client. It imports no web
framework, ORM or scheduler.

Names are imported lazily (PEP 562) so that a short-lived CLI such as ``migratekit`` pays only
for what it uses: importing the package itself costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import (
        Setting,
        describe,
        load_settings,
        parse_bool,
        parse_hostport,
        parse_int,
        parse_port_range,
        parse_seconds,
    )
    from ._errors import (
        ConfigError,
        ContractError,
        HttpConnectionError,
        HttpError,
        MigrationCommonError,
    )
    from ._gunicorn import use_json_error_pages
    from ._http import HttpClient, is_loopback
    from ._ids import canonical_vm_id
    from ._jsonbody import bad_character, parse_json_body
    from ._logging import (
        EventFormatter,
        EventLogger,
        get_logger,
        redact,
        redact_fields,
        register_secret,
        setup_logging,
    )
    from ._models import (
        DiskProgress,
        JobProgress,
        Phase,
        Status,
        SyncType,
        parse_disk_update,
        parse_job_progress,
    )
    from ._text import printable
    from ._time import rfc3339, utcnow

_WHERE = {
    "use_json_error_pages": "._gunicorn",
    "bad_character": "._jsonbody",
    "parse_json_body": "._jsonbody",
    "HttpClient": "._http",
    "is_loopback": "._http",
    "ConfigError": "._errors",
    "ContractError": "._errors",
    "DiskProgress": "._models",
    "EventFormatter": "._logging",
    "EventLogger": "._logging",
    "HttpConnectionError": "._errors",
    "HttpError": "._errors",
    "JobProgress": "._models",
    "MigrationCommonError": "._errors",
    "Phase": "._models",
    "Setting": "._config",
    "Status": "._models",
    "SyncType": "._models",
    "canonical_vm_id": "._ids",
    "describe": "._config",
    "get_logger": "._logging",
    "load_settings": "._config",
    "parse_bool": "._config",
    "parse_disk_update": "._models",
    "parse_hostport": "._config",
    "parse_int": "._config",
    "parse_job_progress": "._models",
    "parse_port_range": "._config",
    "parse_seconds": "._config",
    "printable": "._text",
    "redact": "._logging",
    "redact_fields": "._logging",
    "register_secret": "._logging",
    "rfc3339": "._time",
    "setup_logging": "._logging",
    "utcnow": "._time",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read lazily: importlib.metadata costs ~60 ms at start-up
        from importlib.metadata import version

        return version("migration-common")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'migration_common' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])


__all__ = [
    "ConfigError",
    "ContractError",
    "DiskProgress",
    "EventFormatter",
    "EventLogger",
    "HttpClient",
    "HttpConnectionError",
    "HttpError",
    "JobProgress",
    "MigrationCommonError",
    "Phase",
    "Setting",
    "Status",
    "SyncType",
    "bad_character",
    "canonical_vm_id",
    "describe",
    "get_logger",
    "is_loopback",
    "load_settings",
    "parse_bool",
    "parse_disk_update",
    "parse_hostport",
    "parse_int",
    "parse_job_progress",
    "parse_json_body",
    "parse_port_range",
    "parse_seconds",
    "printable",
    "redact",
    "redact_fields",
    "register_secret",
    "rfc3339",
    "setup_logging",
    "use_json_error_pages",
    "utcnow",
]
