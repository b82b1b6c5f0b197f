"""TLS settings of the NBD client: the pinned CA, the client certificate and key (file paths).

An ``nbds://`` (or ``nbds+unix://``) URI makes the client send NBD_OPT_STARTTLS after the
fixed-newstyle greeting, then wrap the socket with Python's :mod:`ssl`: the server must present a
certificate signed by ``ca`` (the OMA's CA, pinned: the system's trust store is not used) for
the URI's host, and the client presents ``cert``/``key``. Option haggling and transmission
continue inside TLS. A server that does not offer TLS is an error unless ``allow_plaintext``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class TlsSettings:
    """Paths of the pinned CA and of the client's certificate and key."""

    ca: str
    cert: str | None = None
    key: str | None = None
    allow_plaintext: bool = False

    def context(self) -> ssl.SSLContext:
        """A client context trusting only ``ca`` (hostname checked), with the client cert."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cafile=self.ca)
            if self.cert:
                ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise UsageError(f"cannot load the NBD TLS files: {reason}", "tls") from None
        return ctx


def tls_settings(config: dict[str, object]) -> TlsSettings | None:
    """The TLS settings from ``MIGRATEKIT_TLS_*`` (None when no CA is configured)."""
    ca = config.get("TLS_CA")
    cert, key = config.get("TLS_CERT"), config.get("TLS_KEY")
    if not ca:
        if cert or key:
            raise UsageError("a client certificate needs MIGRATEKIT_TLS_CA", "MIGRATEKIT_TLS_CA")
        return None
    if bool(cert) != bool(key):
        missing = "MIGRATEKIT_TLS_KEY" if cert else "MIGRATEKIT_TLS_CERT"
        raise UsageError("the client certificate and key go together", missing)
    for name, value in (("TLS_CA", ca), ("TLS_CERT", cert), ("TLS_KEY", key)):
        if value and not Path(str(value)).is_file():
            raise UsageError(f"no such file: {value}", f"MIGRATEKIT_{name}")
    return TlsSettings(
        ca=str(ca),
        cert=str(cert) if cert else None,
        key=str(key) if key else None,
        allow_plaintext=bool(config.get("TLS_ALLOW_PLAINTEXT")),
    )
