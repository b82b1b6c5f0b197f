"""Every VMA setting, in one place: names, meanings, defaults, validation.

Settings come from the environment (``VMA_<NAME>``), optionally from a TOML file named by
``VMA_CONFIG`` (keys in lower case without the prefix), or from the mapping given to
``create_app``. A missing or invalid value stops startup with a ConfigError naming the
variable. This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migration_common import (
    ConfigError,
    Setting,
    is_loopback,
    load_settings,
    parse_bool,
    parse_hostport,
    parse_int,
    parse_seconds,
)

PREFIX = "VMA"
#: Written by ``vma-api-server enroll`` into <data dir>/pki/ (next to vma.services.identity's
#: files): the SHA-256 of the API token the OMA issued, and the API's server certificate.
TOKEN_HASH_FILE = "api-token.sha256"
SERVER_CERT_FILE = "server.crt"


MIN_TOKEN_LENGTH = 16


def _token(text: str) -> str:
    value = text.strip()
    if len(value) < MIN_TOKEN_LENGTH:
        raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} characters")
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
        "bearer token every API call must carry (at least 16 characters; not needed once "
        "the VMA is enrolled: the token the OMA issued is then the one accepted)",
        secret=True,
        parse=_token,
    ),
    Setting(
        "TLS_CERT",
        "PEM certificate of the API's HTTPS (default: the one issued at enrollment, "
        "<data dir>/pki/server.crt)",
    ),
    Setting("TLS_KEY", "PEM private key of VMA_TLS_CERT (default: <data dir>/pki/client.key)"),
    Setting(
        "ALLOW_PLAINTEXT",
        "let the API listen without TLS on a non-loopback address (warned about)",
        False,
        parse_bool,
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
    try:
        values = load_settings(PREFIX, SETTINGS, overrides=overrides)
    except ConfigError as exc:
        if exc.variable == f"{PREFIX}_API_TOKEN":
            # the loader does not repeat why a secret was refused; its only rule is the length
            raise ConfigError(
                exc.variable,
                f"is too short: it must be at least {MIN_TOKEN_LENGTH} characters "
                "(the value is not shown)",
            ) from None
        raise
    if values["VCENTER_HOST"]:
        for name in ("VCENTER_USER", "VCENTER_PASSWORD"):
            if not values[name]:
                raise ConfigError(f"{PREFIX}_{name}", "is required when VMA_VCENTER_HOST is set")
    if values["LOG_LEVEL"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{PREFIX}_LOG_LEVEL", f"unknown level {values['LOG_LEVEL']!r}")
    values["DATA_DIR"] = Path(values["DATA_DIR"])
    _token_settings(values)
    _tls_settings(values)
    values["LAB_DIR"] = Path(values["LAB_DIR"]) if values["LAB_DIR"] else None
    if values["PROGRESS_URL"] is None:
        host, port = values["BIND"]
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        scheme = "https" if values["TLS_CERT"] else "http"
        values["PROGRESS_URL"] = f"{scheme}://{host}:{port}"
    if values["VDDK_PLUGIN"] is None:
        values["VDDK_PLUGIN"] = ["vddk"]
    if values["MIGRATEKIT"] is None:
        script = Path(sys.executable).with_name("migratekit")
        values["MIGRATEKIT"] = (
            [str(script)] if script.exists() else [sys.executable, "-m", "migratekit"]
        )
    return values


def _token_settings(values: dict[str, Any]) -> None:
    """API_TOKEN_SHA256: the enrolled token's hash, else that of VMA_API_TOKEN (one required)."""
    from vma.services.identity import paths

    enrolled = paths(values["DATA_DIR"]).cert.parent / TOKEN_HASH_FILE
    if enrolled.is_file():
        values["API_TOKEN_SHA256"] = enrolled.read_text().strip()
    elif values["API_TOKEN"]:
        values["API_TOKEN_SHA256"] = hashlib.sha256(values["API_TOKEN"].encode()).hexdigest()
    else:
        raise ConfigError(
            f"{PREFIX}_API_TOKEN",
            "is required until the VMA is enrolled (vma-api-server enroll)",
        )


def _tls_settings(values: dict[str, Any]) -> None:
    """TLS_CERT/TLS_KEY as paths (the enrolled pair by default; None: plain HTTP)."""
    from vma.services.identity import paths

    found = paths(values["DATA_DIR"])
    cert, key = values["TLS_CERT"], values["TLS_KEY"]
    if bool(cert) != bool(key):
        missing = "TLS_KEY" if cert else "TLS_CERT"
        raise ConfigError(f"{PREFIX}_{missing}", "VMA_TLS_CERT and VMA_TLS_KEY are set together")
    if not cert and (found.cert.parent / SERVER_CERT_FILE).is_file() and found.key.is_file():
        cert, key = found.cert.parent / SERVER_CERT_FILE, found.key
    values["TLS_CERT"] = Path(cert) if cert else None
    values["TLS_KEY"] = Path(key) if key else None
    values["TLS_CA"] = found.ca if values["TLS_CERT"] and found.ca.is_file() else None


def check_bind(values: dict[str, Any]) -> str | None:
    """ConfigError for a non-loopback bind without TLS (unless VMA_ALLOW_PLAINTEXT); the
    warning to print when plain HTTP is allowed there; None when all is well."""
    host, port = values["BIND"]
    if values["TLS_CERT"] or is_loopback(host):
        return None
    if not values["ALLOW_PLAINTEXT"]:
        raise ConfigError(
            f"{PREFIX}_BIND",
            f"{host}:{port} is not a loopback address and TLS is off: enroll the VMA "
            "(vma-api-server enroll), or set VMA_TLS_CERT and VMA_TLS_KEY, "
            "or VMA_ALLOW_PLAINTEXT=true to accept plain HTTP",
        )
    return (
        f"the API listens on {host}:{port} without TLS (VMA_ALLOW_PLAINTEXT): "
        "its token crosses the network in clear"
    )


def child_environment(settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment for processes the VMA starts: ours without the VMA's secrets; with TLS,
    the CA migratekit verifies the progress URL's certificate with."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_VARIABLES}
    if (
        settings is not None
        and settings.get("TLS_CA")
        and settings["PROGRESS_URL"].startswith("https://")
    ):
        env["MIGRATEKIT_PROGRESS_CA_FILE"] = str(settings["TLS_CA"])
    return env


def _shown(default: Any) -> str:
    """A default as it is written in the environment (``0.0.0.0:8081``, ``true``, ``-``)."""
    if isinstance(default, tuple):
        return ":".join(str(part) for part in default)
    if isinstance(default, bool):
        return str(default).lower()
    return "-" if default is None else str(default)


def settings_table() -> str:
    """A plain-text table of every setting (for --help and the README): name, default as
    written in the environment, meaning."""
    return "\n".join(
        f"{PREFIX}_{s.name:<24} {'(required)' if s.required else _shown(s.default):<24} {s.doc}"
        for s in SETTINGS
    )
