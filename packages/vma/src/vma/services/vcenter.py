"""Which vCenter the VMA serves, and the credentials it uses for VM operations.

Credentials come from configuration (``VMA_VCENTER_HOST``/``_USER``/``_PASSWORD``) or, when
none is configured, from the last successful ``POST /discover``: those are remembered in a
0600 file ``vcenter.json`` in the data directory (written atomically), the password encrypted
(``password_encrypted``, Fernet) with the key in ``vcenter.key`` (0600, created once next to
it). A file from an older VMA with the password in clear is rewritten encrypted when read.
The password is registered for log redaction and never logged.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from migration_common import register_secret

from ..errors import VcenterNotConfiguredError

KEY_FILE = "vcenter.key"


@dataclass(frozen=True)
class VcenterCredentials:
    """How to reach one vCenter."""

    host: str
    port: int
    username: str
    password: str
    insecure: bool = False
    datacenter: str | None = None

    def __repr__(self) -> str:  # never show the password
        return f"VcenterCredentials(host={self.host!r}, port={self.port}, user={self.username!r})"

    @classmethod
    def from_address(
        cls,
        address: str,
        username: str,
        password: str,
        *,
        insecure: bool = False,
        datacenter: str | None = None,
    ) -> VcenterCredentials:
        """Build from ``host[:port]`` (port 443 by default; ``[v6]:port`` accepted)."""
        host, port = split_address(address)
        return cls(host, port, username, password, insecure, datacenter)


def split_address(address: str) -> tuple[str, int]:
    """``host[:port]`` → (host, port); ValueError for a bad port."""
    text = address.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError("empty host")
    if not port_text:
        return host, 443
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port {port_text!r}")
    return host, int(port_text)


class VcenterProvider:
    """Opens VSphereClient sessions with the configured or remembered credentials."""

    def __init__(self, data_dir: str | Path, configured: VcenterCredentials | None = None) -> None:
        self.path = Path(data_dir) / "vcenter.json"
        self.key_path = Path(data_dir) / KEY_FILE
        self.configured = configured
        if configured:
            register_secret(configured.password)

    def credentials(self) -> VcenterCredentials:
        """The credentials to use, or VcenterNotConfiguredError."""
        if self.configured:
            return self.configured
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise VcenterNotConfiguredError(
                "no vCenter configured (set VMA_VCENTER_HOST/_USER/_PASSWORD or call "
                "POST /api/v1/discover first)"
            ) from None
        if "password_encrypted" in data:
            try:
                data["password"] = self._fernet().decrypt(data.pop("password_encrypted")).decode()
            except (InvalidToken, ValueError):
                raise VcenterNotConfiguredError(
                    f"the remembered vCenter password cannot be decrypted with {self.key_path} "
                    "(call POST /api/v1/discover again)"
                ) from None
            creds = VcenterCredentials(**data)
        else:  # written in clear by an older VMA: encrypt it now
            creds = VcenterCredentials(**data)
            self._write(creds)
        register_secret(creds.password)
        return creds

    def _fernet(self) -> Fernet:
        """The key encrypting the remembered password (created 0600 on first use)."""
        try:
            return Fernet(self.key_path.read_bytes().strip())
        except FileNotFoundError:
            pass
        key = Fernet.generate_key()
        try:
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another thread
            return Fernet(self.key_path.read_bytes().strip())
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return Fernet(key)

    def remember(self, creds: VcenterCredentials) -> None:
        """Store ``creds`` (0600) for later VM operations, unless a vCenter is configured."""
        if self.configured:
            return
        register_secret(creds.password)
        self._write(creds)

    def _write(self, creds: VcenterCredentials) -> None:
        data = asdict(creds)
        data["password_encrypted"] = self._fernet().encrypt(data.pop("password").encode()).decode()
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.path)

    def client(self, creds: VcenterCredentials | None = None) -> Any:
        """A VSphereClient (a context manager) for ``creds`` or the stored credentials."""
        c = creds or self.credentials()
        from ..vmware import VSphereClient

        return VSphereClient(
            c.host,
            c.username,
            c.password,
            port=c.port,
            insecure=c.insecure,
            datacenter=c.datacenter,
        )
