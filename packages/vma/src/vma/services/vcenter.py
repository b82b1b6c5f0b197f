"""Which vCenter the VMA serves, and the credentials it uses for VM operations.

Credentials come from configuration (``VMA_VCENTER_HOST``/``_USER``/``_PASSWORD``) or, when
none is configured, from the last successful ``POST /discover``: those are remembered in a
0600 file ``vcenter.json`` in the data directory (written atomically). The password is
registered for log redaction and never logged.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from migration_common import register_secret

from ..errors import VcenterNotConfiguredError


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
        creds = VcenterCredentials(**data)
        register_secret(creds.password)
        return creds

    def remember(self, creds: VcenterCredentials) -> None:
        """Store ``creds`` (0600) for later VM operations, unless a vCenter is configured."""
        if self.configured:
            return
        register_secret(creds.password)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(creds), fh)
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
