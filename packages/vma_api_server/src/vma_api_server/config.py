"""Every VMA setting, in one place: names, meanings, defaults, validation.

Settings come from the environment (``VMA_<NAME>``), optionally from a TOML file named by
``VMA_CONFIG`` (keys in lower case without the prefix), or from the mapping given to
``create_app``. A missing or invalid value stops startup with a ConfigError naming the
variable. This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migration_common import (
    ConfigError,
    Setting,
    describe,
    load_settings,
    parse_bool,
    parse_hostport,
    parse_int,
    parse_seconds,
)

PREFIX = "VMA"


def _token(text: str) -> str:
    value = text.strip()
    if len(value) < 16:
        raise ValueError("must be at least 16 characters")
    return value


def _command(text: str) -> list[str]:
    argv = shlex.split(text)
    if not argv:
        raise ValueError("must name a command")
    return argv


def _url(text: str) -> str:
    value = text.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {text!r}")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "API_TOKEN",
        "bearer token every API call must carry (at least 16 characters)",
        required=True,
        secret=True,
        parse=_token,
    ),
    Setting("BIND", "host:port the API listens on", ("0.0.0.0", 8081), parse_hostport),
    Setting("DATA_DIR", "directory of the job database, job plans and logs", "/var/lib/vma"),
    Setting("LAB_DIR", "lab VM images: <dir>/<vm_id>/<disk_key>.qcow2 (unset: no lab source)"),
    Setting(
        "VCENTER_HOST",
        "vCenter host[:port] this VMA serves (unset: the last one given "
        "to POST /discover is remembered)",
    ),
    Setting("VCENTER_USER", "vCenter user (required with VMA_VCENTER_HOST)"),
    Setting("VCENTER_PASSWORD", "vCenter password (required with VMA_VCENTER_HOST)", secret=True),
    Setting("VCENTER_INSECURE", "skip TLS certificate verification for vCenter", False, parse_bool),
    Setting("VCENTER_DATACENTER", "limit discovery to this datacenter"),
    Setting("MAX_CONCURRENT_JOBS", "jobs running at once; more are queued", 4, parse_int(1, 64)),
    Setting(
        "MAX_PARALLEL_DISKS", "disks migratekit copies at once within a job", 2, parse_int(1, 16)
    ),
    Setting(
        "STOP_GRACE", "seconds between SIGTERM and SIGKILL when stopping a job", 10.0, parse_seconds
    ),
    Setting("POLL_INTERVAL", "seconds between job supervision ticks", 0.5, parse_seconds),
    Setting(
        "JOB_RETENTION_DAYS",
        "days a finished job's directory (plan, migratekit log) is kept; 0 = forever",
        14,
        parse_int(0, 3650),
    ),
    Setting(
        "PROGRESS_URL", "base URL migratekit posts progress to (default: from VMA_BIND)", None, _url
    ),
    Setting(
        "MIGRATEKIT",
        "command that runs migratekit (default: the migratekit script next to this Python)",
        None,
        _command,
    ),
    Setting(
        "POWER_OFF_TIMEOUT", "default seconds a graceful power-off waits", 300.0, parse_seconds
    ),
    Setting(
        "VDDK_LIBDIR",
        "VDDK library directory for nbdkit's vddk plugin",
        "/usr/lib/vmware-vix-disklib",
    ),
    Setting(
        "VDDK_PLUGIN",
        "the nbdkit plugin that serves vSphere disks, as the words nbdkit gets in place of "
        "'vddk' (shell syntax; the lab's stand-in: 'python /path/to/tools/vddk/plugin.py')",
        None,
        _command,
    ),
    Setting("THREADS", "gunicorn threads of the single worker", 8, parse_int(2, 64)),
    Setting("TIMEOUT", "gunicorn worker timeout in seconds", 120.0, parse_seconds),
    Setting("LOG_LEVEL", "log level (DEBUG, INFO, WARNING, ERROR)", "INFO"),
    Setting("LOG_JSON", "log one JSON object per line instead of key=value", False, parse_bool),
)

_SECRET_VARIABLES = {f"{PREFIX}_{s.name}" for s in SETTINGS if s.secret}


def load_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load and validate every setting; raise ConfigError naming the variable."""
    values = load_settings(PREFIX, SETTINGS, overrides=overrides)
    if values["VCENTER_HOST"]:
        for name in ("VCENTER_USER", "VCENTER_PASSWORD"):
            if not values[name]:
                raise ConfigError(f"{PREFIX}_{name}", "is required when VMA_VCENTER_HOST is set")
    if values["LOG_LEVEL"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{PREFIX}_LOG_LEVEL", f"unknown level {values['LOG_LEVEL']!r}")
    values["DATA_DIR"] = Path(values["DATA_DIR"])
    values["LAB_DIR"] = Path(values["LAB_DIR"]) if values["LAB_DIR"] else None
    if values["PROGRESS_URL"] is None:
        host, port = values["BIND"]
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        values["PROGRESS_URL"] = f"http://{host}:{port}"
    if values["VDDK_PLUGIN"] is None:
        values["VDDK_PLUGIN"] = ["vddk"]
    if values["MIGRATEKIT"] is None:
        script = Path(sys.executable).with_name("migratekit")
        values["MIGRATEKIT"] = (
            [str(script)] if script.exists() else [sys.executable, "-m", "migratekit"]
        )
    return values


def child_environment() -> dict[str, str]:
    """The environment for processes the VMA starts: ours without the VMA's secrets."""
    return {k: v for k, v in os.environ.items() if k not in _SECRET_VARIABLES}


def settings_table() -> str:
    """A plain-text table of every setting (for --help and the README)."""
    return describe(PREFIX, SETTINGS)
