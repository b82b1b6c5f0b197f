"""The VMA's TLS identity, received from the OMA at enrollment.

Stored in ``<data_dir>/pki/`` (directory 0700): ``client.crt`` and ``client.key`` (0600), the
VMA's certificate and key signed by the OMA's CA, presented to the OMA's NBD exports (and API);
``oma-ca.crt``, the OMA's CA certificate, pinned: the VMA trusts only servers it signed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PKI_DIR = "pki"


@dataclass(frozen=True)
class Identity:
    """Paths of the VMA's certificate, key and the pinned OMA CA."""

    cert: Path
    key: Path
    ca: Path


def paths(data_dir: Path) -> Identity:
    """Where the identity files live (they may not exist yet)."""
    base = Path(data_dir) / PKI_DIR
    return Identity(base / "client.crt", base / "client.key", base / "oma-ca.crt")


def load(data_dir: Path) -> Identity | None:
    """The identity when all three files exist, else None (the VMA is not enrolled)."""
    found = paths(data_dir)
    if all(p.is_file() for p in (found.cert, found.key, found.ca)):
        return found
    return None


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def save(data_dir: Path, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> Identity:
    """Store a new identity atomically (each file replaced whole); returns its paths."""
    found = paths(data_dir)
    found.cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(found.cert.parent, 0o700)
    _write(found.key, key_pem, 0o600)
    _write(found.cert, cert_pem, 0o600)
    _write(found.ca, ca_pem, 0o600)
    return found
