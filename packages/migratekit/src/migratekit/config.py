"""Every ``MIGRATEKIT_*`` setting, defined and loaded in one place.

Precedence: command-line option > environment > TOML file named by ``MIGRATEKIT_CONFIG`` >
default. No other module reads the environment.
"""

from __future__ import annotations

from typing import Any

from migration_common import Setting, load_settings, parse_bool, parse_int, parse_seconds

PREFIX = "MIGRATEKIT"


def parse_size(text: str) -> int:
    """Parse a byte size: ``1048576``, ``256K``, ``1M``, ``4MiB`` (binary units)."""
    raw = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    factor = 1
    for suffix, mult in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if raw.endswith(suffix):
            raw, factor = raw[:-1], mult
            break
    try:
        value = int(raw) * factor
    except ValueError:
        raise ValueError(f"expected a size like 1048576, 256K or 1M, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"must be positive, got {text!r}")
    return value


SETTINGS = (
    Setting(
        "PROGRESS_TOKEN",
        "bearer token for the VMA progress endpoint (never on argv)",
        default=None,
        secret=True,
    ),
    Setting(
        "PROGRESS_CA_FILE",
        "CA file an https progress URL's certificate is verified with (default: system CAs)",
        default=None,
    ),
    Setting(
        "CONNECTIONS",
        "NBD connections per side when both servers allow multi-conn",
        default=2,
        parse=parse_int(1, 16),
    ),
    Setting(
        "REQUEST_SIZE",
        "bytes per read/write request (capped at the server maximum)",
        default=1 << 20,
        parse=parse_size,
    ),
    Setting("WINDOW", "requests in flight per connection", default=16, parse=parse_int(1, 256)),
    Setting(
        "RETRIES",
        "reconnect attempts per worker after a dropped connection",
        default=5,
        parse=parse_int(0, 100),
    ),
    Setting(
        "TIMEOUT",
        "seconds without an answer before a connection counts as dead",
        default=60.0,
        parse=parse_seconds,
    ),
    Setting(
        "PROGRESS_INTERVAL",
        "seconds between progress updates per disk",
        default=1.0,
        parse=parse_seconds,
    ),
    Setting(
        "FLUSH_EVERY",
        "flush each target connection after this many bytes (0: only at the end); bounds "
        "what is re-sent after a target restart",
        default=1 << 30,
        parse=lambda text: 0 if str(text).strip() == "0" else parse_size(text),
    ),
    Setting(
        "CHECKPOINT_INTERVAL",
        "full copies with a checkpoint: seconds between flushes of each target connection "
        "that wrote something (besides every FLUSH_EVERY bytes), so the checkpoint advances",
        default=30.0,
        parse=parse_seconds,
    ),
    Setting(
        "SPLICE",
        "relay data with splice(2) inside the kernel (Linux); false = buffers",
        default=True,
        parse=parse_bool,
    ),
    Setting(
        "TLS_CA",
        "file of the CA that signs the nbds:// servers (pinned; the system's trust store is "
        "not used)",
        default=None,
    ),
    Setting("TLS_CERT", "file of the client certificate presented to nbds:// servers", None),
    Setting("TLS_KEY", "file of the client certificate's private key", default=None),
    Setting(
        "TLS_ALLOW_PLAINTEXT",
        "continue in plaintext when an nbds:// server does not offer TLS (default: fail)",
        default=False,
        parse=parse_bool,
    ),
    Setting("LOG_LEVEL", "log level (DEBUG, INFO, WARNING, ERROR)", default="INFO"),
    Setting("DEBUG", "show tracebacks on errors", default=False, parse=parse_bool),
)


def load_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load and validate every setting (raises ConfigError naming the variable)."""
    clean = {k: v for k, v in (overrides or {}).items() if v is not None}
    return dict(load_settings(PREFIX, SETTINGS, overrides=clean))
