"""NBD client: the wire format (``_protocol``, no IO), URIs and the socket transport."""

from __future__ import annotations

from ._client import NbdClient
from ._protocol import BASE_ALLOCATION, DIRTY_BITMAP_PREFIX, ExportInfo
from ._tls import TlsSettings
from ._uri import NbdUri, parse_uri

__all__ = [
    "BASE_ALLOCATION",
    "DIRTY_BITMAP_PREFIX",
    "ExportInfo",
    "NbdClient",
    "NbdUri",
    "TlsSettings",
    "parse_uri",
]
