"""OMA configuration: every ``OMA_*`` setting, defined, documented and validated here.

This is the only module of the OMA that reads ``os.environ``. Values come from (highest
first) explicit overrides, the environment, the TOML file named by ``OMA_CONFIG`` (keys are
the names below in lower case without the prefix), and the defaults. An invalid value stops
startup with :class:`migration_common.ConfigError` naming the variable.

Server settings are loaded with :func:`load_config` (returns a frozen :class:`OmaConfig`);
the operator CLI's client settings (``OMA_URL``, ``OMA_TOKEN``, ``OMA_DEBUG``) with
:func:`load_client_config`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migration_common import (
    ConfigError,
    Setting,
    load_settings,
    parse_bool,
    parse_hostport,
    parse_int,
    parse_port_range,
    parse_seconds,
)
from migration_common import is_loopback as _is_loopback

PREFIX = "OMA"


def _default_data_dir() -> str:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/oma"
    return str(Path.home() / ".local" / "share" / "oma")


def _parse_database_url(text: str) -> str:
    url = text.strip()
    schemes = ("sqlite://", "postgresql://", "postgres://", "mysql://", "mariadb://")
    if not url.startswith(schemes):
        raise ValueError(
            f"expected sqlite:///path, postgresql://… or mysql://…, got {url.split(':')[0]!r}:…"
        )
    return url


def _parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {text!r}")
    return level


def _parse_host(text: str) -> str:
    host = text.strip()
    if not host or " " in host or "/" in host:
        raise ValueError(f"expected a host name or IP address, got {text!r}")
    return host


def _parse_nonempty(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _parse_api_url(text: str) -> str:
    """The OMA's base URL: ``http(s)://host:port`` (a trailing ``/`` or ``/api/v1``, as the demo
    prints the API's URL, is dropped)."""
    url = text.strip().rstrip("/")
    url = url.removesuffix("/api/v1").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected the OMA's base URL such as http://127.0.0.1:8082, got {text!r}")
    return url


def _parse_guest_conversion(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("skip", "virt-v2v"):
        raise ValueError(f"expected skip or virt-v2v, got {text!r}")
    return mode


NBD_CACHE_MODES = ("none", "writeback", "writethrough", "directsync", "unsafe")
NBD_AIO_MODES = ("threads", "native", "io_uring")


def _parse_nbd_cache(text: str) -> str:
    mode = text.strip().lower()
    if mode not in NBD_CACHE_MODES:
        raise ValueError(f"expected one of {', '.join(NBD_CACHE_MODES)}, got {text!r}")
    return mode


def _parse_nbd_aio(text: str) -> str | None:
    mode = text.strip().lower()
    if mode and mode not in NBD_AIO_MODES:
        raise ValueError(f"expected one of {', '.join(NBD_AIO_MODES)} (or empty), got {text!r}")
    return mode or None


def _parse_metrics_bind(text: str) -> tuple[str, int] | None:
    """``host:port``, a bare port (loopback) or empty (off)."""
    value = text.strip()
    if not value:
        return None
    return parse_hostport(f"127.0.0.1:{value}" if value.isdigit() else value)


def _parse_secret_key(text: str) -> str:
    # Validated for real (Fernet format) by oma.secrets; here only non-empty.
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _parse_hostnames(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        _parse_host(name)
    return names


# Every server setting: name (without OMA_), meaning, default. None defaults are derived.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATA_DIR",
        "directory for the SQLite database, secret key, export state and logs",
        None,
        _parse_nonempty,
    ),
    Setting(
        "DATABASE_URL",
        "database URL: sqlite:///path (default: <data dir>/oma.db), "
        "postgresql://user:pw@host/db or mysql://user:pw@host/db",
        None,
        _parse_database_url,
        secret=True,
    ),
    Setting("BIND", "host:port the API (oma serve) listens on", ("0.0.0.0", 8082), parse_hostport),
    Setting(
        "METRICS_BIND",
        "host:port (or port, on 127.0.0.1) where oma worker serves its own Prometheus metrics "
        "without a token; empty: not served",
        None,
        _parse_metrics_bind,
    ),
    Setting(
        "SECRET_KEY",
        "Fernet key encrypting stored secrets (generated into "
        "<data dir>/secret.key with a warning when absent)",
        None,
        _parse_secret_key,
        secret=True,
    ),
    Setting("NBD_BIND_HOST", "address the replica NBD exports listen on", "127.0.0.1", _parse_host),
    Setting(
        "NBD_ADVERTISE_HOST",
        "host the VMA uses to reach the exports (default: bind host)",
        None,
        _parse_host,
    ),
    Setting(
        "NBD_PORT_RANGE",
        "first-last TCP ports for replica NBD exports",
        (10100, 10199),
        parse_port_range,
    ),
    Setting(
        "NBD_CACHE",
        "qemu-nbd --cache of the replica exports (production: none, i.e. O_DIRECT)",
        "writeback",
        _parse_nbd_cache,
    ),
    Setting(
        "NBD_AIO",
        "qemu-nbd --aio of the replica exports: threads, native or io_uring "
        "(default: qemu's; production: native, which needs NBD_CACHE none or directsync)",
        None,
        _parse_nbd_aio,
    ),
    Setting(
        "NBD_ALLOW_PLAINTEXT",
        "export the replicas of a VMA without an enrolled certificate without TLS (with a "
        "warning); false: such a sync fails, enrolled VMAs always get TLS",
        False,
        parse_bool,
    ),
    Setting(
        "BY_ID_DIR",
        "directory where attached volumes appear as virtio-<serial>",
        "/dev/disk/by-id",
        _parse_nonempty,
    ),
    Setting("POLL_INTERVAL", "seconds between progress poller ticks", 5.0, parse_seconds),
    Setting(
        "VMA_UNREACHABLE_TIMEOUT",
        "seconds a VMA may stay unreachable before its active jobs fail as vma_unreachable",
        120.0,
        parse_seconds,
    ),
    Setting(
        "JOB_LOST_TIMEOUT",
        "seconds a VMA may report a job unknown before it fails as job_lost",
        60.0,
        parse_seconds,
    ),
    Setting(
        "STALE_TIMEOUT",
        "seconds without byte progress before a job fails as stalled",
        900.0,
        parse_seconds,
    ),
    Setting(
        "WORKER_ID",
        "name of this worker in leases and heartbeats (default: hostname-pid)",
        None,
        _parse_nonempty,
    ),
    Setting(
        "LEASE_TIMEOUT",
        "seconds a claimed job or step stays leased to a worker that no longer renews it",
        60.0,
        parse_seconds,
    ),
    Setting(
        "CLOUDSTACK_POLL_INTERVAL", "seconds between CloudStack async-job polls", 2.0, parse_seconds
    ),
    Setting(
        "DEVICE_TIMEOUT",
        "seconds to wait for an attached volume's by-id entry",
        60.0,
        parse_seconds,
    ),
    Setting(
        "AUTO_UPGRADE",
        "apply pending schema migrations when oma serve/worker start",
        True,
        parse_bool,
    ),
    Setting(
        "ATTACH_BUDGET",
        "replica volumes attached to the OMA VM at once (1-31: below KVM's 32 data volumes); "
        "a sync that needs more waits in pending",
        24,
        parse_int(1, 31),
    ),
    Setting(
        "MAX_JOBS",
        "replication jobs admitted at once in all (0: no limit); the others wait in pending",
        0,
        parse_int(0, 100000),
    ),
    Setting(
        "MAX_JOBS_PER_VMA",
        "replication jobs admitted at once per VMA (0: no limit)",
        0,
        parse_int(0, 100000),
    ),
    Setting(
        "MAX_JOBS_PER_HOST",
        "replication jobs admitted at once per ESXi host of the source VMs (0: no limit)",
        0,
        parse_int(0, 100000),
    ),
    Setting(
        "MAX_JOBS_PER_DATASTORE",
        "replication jobs admitted at once per datastore of the source disks (0: no limit)",
        0,
        parse_int(0, 100000),
    ),
    Setting(
        "GUEST_CONVERSION",
        "guest conversion step of a live failover: skip (the lab) or virt-v2v",
        "skip",
        _parse_guest_conversion,
    ),
    Setting("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR", "INFO", _parse_log_level),
    Setting("LOG_FORMAT", "kv (key=value lines) or json", "kv", _parse_nonempty),
    Setting("API_WORKERS", "gunicorn worker processes for oma serve", 2, parse_int(1, 64)),
    Setting("API_THREADS", "threads per gunicorn worker", 4, parse_int(1, 64)),
    Setting("API_TIMEOUT", "gunicorn worker timeout in seconds", 30, parse_int(5, 3600)),
    Setting("VMA_TIMEOUT", "seconds an HTTP call to a VMA may take", 30.0, parse_seconds),
    Setting(
        "TLS",
        "serve the API over HTTPS; without OMA_TLS_CERT, oma serve issues its certificate "
        "from the OMA CA (<data dir>/pki/api-server.crt) for the bind host and OMA_TLS_HOSTNAMES",
        False,
        parse_bool,
    ),
    Setting("TLS_CERT", "PEM certificate (chain) of the API's HTTPS (implies OMA_TLS)", None),
    Setting("TLS_KEY", "PEM private key of OMA_TLS_CERT", None),
    Setting(
        "TLS_HOSTNAMES",
        "comma-separated DNS names and addresses the issued API certificate is valid for "
        "(in addition to the bind host and this host's name)",
        (),
        _parse_hostnames,
    ),
    Setting(
        "ALLOW_PLAINTEXT",
        "let oma serve listen without TLS on a non-loopback address (warned about)",
        False,
        parse_bool,
    ),
    Setting(
        "VMA_CA_FILE",
        "CA certificate(s) the OMA verifies VMA APIs' HTTPS certificates with "
        "(default: the OMA CA, which issues an enrolled VMA's certificate)",
        None,
    ),
    Setting(
        "ENROLLMENT_TTL",
        "seconds a VMA enrollment code stays valid",
        900.0,
        parse_seconds,
    ),
)

CLIENT_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "URL",
        "base URL of the OMA API for operator commands",
        "http://127.0.0.1:8082",
        _parse_api_url,
    ),
    Setting("TOKEN", "API token for operator commands", None, str, secret=True),
    Setting("DEBUG", "show tracebacks for CLI errors", False, parse_bool),
    Setting(
        "CA_FILE",
        "CA certificate the operator commands verify the OMA's HTTPS certificate with "
        "(the OMA's <data dir>/pki/ca.crt; default: the system's trusted CAs)",
        None,
    ),
)


@dataclass(frozen=True)
class OmaConfig:
    """Validated OMA settings; attributes are the setting names in lower case.

    ``config["POLL_INTERVAL"]`` and ``config.poll_interval`` are the same value.
    """

    data_dir: Path
    database_url: str
    bind: tuple[str, int]
    secret_key: str | None
    nbd_bind_host: str
    nbd_advertise_host: str
    nbd_port_range: tuple[int, int]
    by_id_dir: Path
    poll_interval: float
    vma_unreachable_timeout: float
    job_lost_timeout: float
    stale_timeout: float
    worker_id: str
    lease_timeout: float
    cloudstack_poll_interval: float
    device_timeout: float
    auto_upgrade: bool
    log_level: str
    log_format: str
    api_workers: int
    api_threads: int
    api_timeout: int
    vma_timeout: float
    guest_conversion: str = "skip"
    attach_budget: int = 24
    max_jobs: int = 0
    max_jobs_per_vma: int = 0
    max_jobs_per_host: int = 0
    max_jobs_per_datastore: int = 0
    nbd_cache: str = "writeback"
    nbd_aio: str | None = None
    nbd_allow_plaintext: bool = False
    metrics_bind: tuple[str, int] | None = None
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_hostnames: tuple[str, ...] = ()
    allow_plaintext: bool = False
    vma_ca_file: Path | None = None
    enrollment_ttl: float = 900.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        name = key.lower().removeprefix("oma_")
        if name in self.__dataclass_fields__ and name != "extra":
            return getattr(self, name)
        return self.extra[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style access with a default."""
        try:
            return self[key]
        except KeyError:
            return default

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (secret key masked)."""
        data = asdict(self)
        data.pop("extra")
        if data["secret_key"]:
            data["secret_key"] = "***"
        return data

    @property
    def bind_url(self) -> str:
        """``http(s)://host:port`` of the API as seen from this host."""
        host, port = self.bind
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def ca_file(self) -> Path:
        """The OMA CA's certificate (created with the CA by :func:`oma.pki.load_ca`)."""
        return self.data_dir / "pki" / "ca.crt"

    def check_bind(self) -> str | None:
        """Whether ``oma serve`` may listen on OMA_BIND: ConfigError for a non-loopback address
        without TLS (unless OMA_ALLOW_PLAINTEXT); the warning to log when it is allowed."""
        host, port = self.bind
        if self.tls or _is_loopback(host):
            return None
        if not self.allow_plaintext:
            raise ConfigError(
                "OMA_BIND",
                f"{host}:{port} is not a loopback address and TLS is off: set OMA_TLS=true "
                "(a certificate issued from the OMA CA) or OMA_TLS_CERT and OMA_TLS_KEY, "
                "or OMA_ALLOW_PLAINTEXT=true to accept plain HTTP",
            )
        return (
            f"the API listens on {host}:{port} without TLS (OMA_ALLOW_PLAINTEXT): "
            "tokens cross the network in clear"
        )


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> OmaConfig:
    """Load, validate and derive the OMA's settings (see the module docstring for precedence).

    ``overrides`` keys are setting names with or without the ``OMA_`` prefix, in any case.
    """
    clean = {k.upper().removeprefix("OMA_"): v for k, v in (overrides or {}).items()}
    values = load_settings(PREFIX, SETTINGS, environ=environ, overrides=clean)
    data_dir = Path(values["DATA_DIR"] or _default_data_dir()).expanduser()
    db_url = values["DATABASE_URL"] or f"sqlite:///{(data_dir / 'oma.db').resolve()}"
    lo, hi = values["NBD_PORT_RANGE"]
    if values["LOG_FORMAT"] not in ("kv", "json"):
        raise ConfigError("OMA_LOG_FORMAT", f"expected kv or json, got {values['LOG_FORMAT']!r}")
    worker_id = values["WORKER_ID"] or f"{socket.gethostname()}-{os.getpid()}"
    if values["NBD_AIO"] == "native" and values["NBD_CACHE"] not in ("none", "directsync"):
        raise ConfigError(
            "OMA_NBD_AIO",
            f"native needs OMA_NBD_CACHE none or directsync (O_DIRECT), got "
            f"{values['NBD_CACHE']!r}",
        )
    tls_cert, tls_key = values["TLS_CERT"], values["TLS_KEY"]
    if bool(tls_cert) != bool(tls_key):
        missing = "OMA_TLS_KEY" if tls_cert else "OMA_TLS_CERT"
        raise ConfigError(missing, "OMA_TLS_CERT and OMA_TLS_KEY are set together")
    tls = bool(values["TLS"] or tls_cert)
    return OmaConfig(
        data_dir=data_dir,
        database_url=db_url,
        bind=values["BIND"],
        secret_key=values["SECRET_KEY"],
        nbd_bind_host=values["NBD_BIND_HOST"],
        nbd_advertise_host=values["NBD_ADVERTISE_HOST"] or values["NBD_BIND_HOST"],
        nbd_port_range=(lo, hi),
        by_id_dir=Path(values["BY_ID_DIR"]),
        poll_interval=values["POLL_INTERVAL"],
        vma_unreachable_timeout=values["VMA_UNREACHABLE_TIMEOUT"],
        job_lost_timeout=values["JOB_LOST_TIMEOUT"],
        stale_timeout=values["STALE_TIMEOUT"],
        worker_id=worker_id,
        lease_timeout=values["LEASE_TIMEOUT"],
        cloudstack_poll_interval=values["CLOUDSTACK_POLL_INTERVAL"],
        device_timeout=values["DEVICE_TIMEOUT"],
        auto_upgrade=values["AUTO_UPGRADE"],
        log_level=values["LOG_LEVEL"],
        log_format=values["LOG_FORMAT"],
        api_workers=values["API_WORKERS"],
        api_threads=values["API_THREADS"],
        api_timeout=values["API_TIMEOUT"],
        vma_timeout=values["VMA_TIMEOUT"],
        guest_conversion=values["GUEST_CONVERSION"],
        attach_budget=values["ATTACH_BUDGET"],
        max_jobs=values["MAX_JOBS"],
        max_jobs_per_vma=values["MAX_JOBS_PER_VMA"],
        max_jobs_per_host=values["MAX_JOBS_PER_HOST"],
        max_jobs_per_datastore=values["MAX_JOBS_PER_DATASTORE"],
        nbd_cache=values["NBD_CACHE"],
        nbd_aio=values["NBD_AIO"],
        nbd_allow_plaintext=values["NBD_ALLOW_PLAINTEXT"],
        metrics_bind=values["METRICS_BIND"],
        tls=tls,
        tls_cert=Path(tls_cert).expanduser() if tls_cert else None,
        tls_key=Path(tls_key).expanduser() if tls_key else None,
        tls_hostnames=values["TLS_HOSTNAMES"],
        allow_plaintext=values["ALLOW_PLAINTEXT"],
        vma_ca_file=Path(values["VMA_CA_FILE"]).expanduser() if values["VMA_CA_FILE"] else None,
        enrollment_ttl=values["ENROLLMENT_TTL"],
    )


@dataclass(frozen=True)
class ClientConfig:
    """Settings of the operator commands (``oma vms``, ``oma jobs`` …)."""

    url: str
    token: str | None
    debug: bool
    ca_file: str | None = None

    @property
    def verify(self) -> bool | str:
        """``verify`` for requests: the CA file, else the system's trusted CAs (never off)."""
        return self.ca_file or True


def load_client_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Load ``OMA_URL``, ``OMA_TOKEN``, ``OMA_DEBUG`` and ``OMA_CA_FILE`` (overrides win over
    the environment)."""
    env = dict(os.environ if environ is None else environ)
    env.pop("OMA_CONFIG", None)  # the server's TOML file has no client keys
    clean = {
        k.upper().removeprefix("OMA_"): v for k, v in (overrides or {}).items() if v is not None
    }
    values = load_settings(PREFIX, CLIENT_SETTINGS, environ=env, overrides=clean)
    return ClientConfig(
        url=values["URL"],
        token=values["TOKEN"] or None,
        debug=values["DEBUG"],
        ca_file=values["CA_FILE"] or None,
    )
