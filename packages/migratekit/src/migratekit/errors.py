"""Errors raised by migratekit.

::

    MigrateKitError                 base of everything migratekit raises
    ├── UsageError                  bad input: a malformed URI, plan or extent list (names field)
    ├── NbdError                    anything that went wrong talking NBD (carries server and export)
    │   ├── NbdProtocolError        the server sent something the protocol does not allow
    │   ├── NbdHandshakeError       the server refused an option (missing export, no meta context)
    │   ├── NbdCommandError         the server answered a request with an error (errno, offset)
    │   └── NbdConnectionError      the connection failed or dropped (retryable)
    └── CopyError                   a disk could not be copied (names disk, offset, server)
        ├── TargetTooSmallError     the target is smaller than the source
        ├── CopyStopped             a signal (SIGTERM/SIGINT) stopped the copy
        └── VerifyError             source and target digests differ after the copy
"""

from __future__ import annotations


class MigrateKitError(Exception):
    """Base class of every error raised by migratekit."""


class UsageError(MigrateKitError, ValueError):
    """Bad input (URI, plan, extent list); ``field`` names the offending item."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class NbdError(MigrateKitError):
    """A failure talking to an NBD server; ``server`` is the URI without secrets."""

    def __init__(self, message: str, *, server: str = "", offset: int | None = None) -> None:
        detail = message
        if offset is not None:
            detail += f" at offset {offset}"
        if server:
            detail += f" ({server})"
        super().__init__(detail)
        self.server = server
        self.offset = offset
        self.reason = message


class NbdProtocolError(NbdError):
    """The server sent bytes the NBD protocol does not allow here."""


class NbdHandshakeError(NbdError):
    """The server refused the handshake or an option (unknown export, no meta context)."""


class NbdCommandError(NbdError):
    """The server answered a request with an error; ``errno`` is the NBD error number."""

    def __init__(
        self, message: str, *, errno: int, server: str = "", offset: int | None = None
    ) -> None:
        super().__init__(message, server=server, offset=offset)
        self.errno = errno


class NbdConnectionError(NbdError):
    """The connection could not be made or dropped mid-request (retryable)."""


class CopyError(MigrateKitError):
    """A disk could not be copied; the message names disk, offset and server."""

    def __init__(self, message: str, *, disk_key: str = "", offset: int | None = None) -> None:
        super().__init__(f"disk {disk_key}: {message}" if disk_key else message)
        self.disk_key = disk_key
        self.offset = offset
        self.reason = message


class TargetTooSmallError(CopyError):
    """The target export is smaller than the source export."""


class CopyStopped(CopyError):
    """A signal (SIGTERM or SIGINT) stopped the copy before it finished."""


class VerifyError(CopyError):
    """The digests of source and target differ after the copy."""
