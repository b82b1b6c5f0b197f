"""NBD URIs: ``nbd://host[:port]/export`` and ``nbd+unix:///export?socket=/path``, and their
TLS forms ``nbds://`` and ``nbds+unix://`` (libnbd's schemes)."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import UsageError

DEFAULT_PORT = 10809


class NbdUri(NamedTuple):
    """Where an NBD export lives: TCP host/port or a unix socket, plus the export name."""

    export: str
    host: str | None = None
    port: int = DEFAULT_PORT
    socket_path: str | None = None
    tls: bool = False

    def __str__(self) -> str:
        scheme = "nbds" if self.tls else "nbd"
        if self.socket_path:
            return f"{scheme}+unix:///{self.export}?socket={self.socket_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.export}"


def parse_uri(text: str, field: str = "uri") -> NbdUri:
    """Parse an NBD URI; raise :class:`UsageError` naming ``field`` when it is malformed."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("an NBD URI is required (nbd://host:port/export)", field)
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"malformed NBD URI {text!r}: {exc}", field) from None
    export = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
    tls = parts.scheme in ("nbds", "nbds+unix")
    if parts.scheme in ("nbd", "nbds"):
        if not parts.hostname:
            raise UsageError(f"malformed NBD URI {text!r}: no host", field)
        if parts.query:
            raise UsageError(f"malformed NBD URI {text!r}: unexpected query", field)
        return NbdUri(export=export, host=parts.hostname, port=port or DEFAULT_PORT, tls=tls)
    if parts.scheme in ("nbd+unix", "nbds+unix"):
        if parts.netloc:
            raise UsageError(f"malformed NBD URI {text!r}: nbd+unix takes no host", field)
        sockets = parse_qs(parts.query).get("socket", [])
        if len(sockets) != 1 or not sockets[0]:
            raise UsageError(f"malformed NBD URI {text!r}: needs ?socket=/path", field)
        return NbdUri(export=export, socket_path=sockets[0], tls=tls)
    raise UsageError(
        f"malformed NBD URI {text!r}: scheme must be nbd://, nbds://, nbd+unix:// or nbds+unix://",
        field,
    )
