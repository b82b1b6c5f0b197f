"""migration_common — the lean contract shared by migratekit, the VMA and the OMA.

It holds the progress and job models (one status enum, one phase enum), configuration
loading, logging setup with secret redaction, and the JSON HTTP client. It imports no web
framework, ORM or scheduler.
"""

from __future__ import annotations

from importlib.metadata import version as _version

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
from ._http import HttpClient
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
    rfc3339,
    utcnow,
)

__version__ = _version("migration-common")

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
    "describe",
    "get_logger",
    "load_settings",
    "parse_bool",
    "parse_disk_update",
    "parse_hostport",
    "parse_int",
    "parse_job_progress",
    "parse_port_range",
    "parse_seconds",
    "redact",
    "redact_fields",
    "register_secret",
    "rfc3339",
    "setup_logging",
    "utcnow",
]
