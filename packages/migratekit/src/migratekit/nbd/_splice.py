"""Zero-copy relay of a read reply's payload into a write request with ``splice(2)``.

The copy engine receives a read reply header from the source, sends a write header to the
target, then moves the payload socket → pipe → socket inside the kernel: the bytes never
enter Python (two copies fewer per byte than ``recv_into`` + ``sendmsg``). Linux only; where
``os.splice`` is missing or refuses these sockets the caller falls back to the buffer path.
On the client's blocking sockets each ``splice`` waits in the kernel (bounded by the socket's
``SO_RCVTIMEO``/``SO_SNDTIMEO``), so a relay round costs two system calls, not four.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select

from ..errors import NbdConnectionError
from ._client import NbdClient

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def splice_available() -> bool:
    """True when this platform has ``os.splice``."""
    return hasattr(os, "splice")


class Unsupported(Exception):
    """splice refused these file descriptors before moving any byte."""


class SplicePipe:
    """A pipe sized for relaying (up to 1 MiB, the default pipe-max-size)."""

    def __init__(self, size: int = 1 << 20) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.write_fd, F_SETPIPE_SZ, size)
        except OSError:
            pass  # keep the default 64 KiB
        self.capacity = fcntl.fcntl(self.write_fd, F_GETPIPE_SZ)

    def close(self) -> None:
        """Close both ends."""
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _wait(fd: int, event: int, timeout: float | None, client: NbdClient, what: str) -> None:
    """Wait until ``fd`` is ready; on a blocking socket EAGAIN meant its kernel timeout."""
    if os.get_blocking(fd):
        raise NbdConnectionError(f"{what}: timed out", server=client.server)
    poller = select.poll()
    poller.register(fd, event)
    if not poller.poll(None if timeout is None else int(timeout * 1000)):
        raise NbdConnectionError(f"{what}: timed out", server=client.server)


def relay(
    src: NbdClient, tgt: NbdClient, length: int, pipe: SplicePipe, *, first: bool = False
) -> None:
    """Move ``length`` payload bytes from ``src``'s socket to ``tgt``'s socket.

    With ``first``, an unsupported splice raises :class:`Unsupported` before any byte moved
    (the caller then relays through a buffer); so does a TLS connection on either side,
    always. Any other failure leaves both streams in the middle of a message: the caller must
    drop both connections.
    """
    if src.tls or tgt.tls:  # the kernel would move ciphertext as if it were data
        raise Unsupported("splice cannot relay through TLS")
    src_fd, tgt_fd = src.fileno(), tgt.fileno()
    remaining = length
    while remaining:
        try:
            got = os.splice(src_fd, pipe.write_fd, min(remaining, pipe.capacity))
        except BlockingIOError:
            _wait(src_fd, select.POLLIN, src.timeout, src, "receive failed")
            continue
        except OSError as exc:
            if first and remaining == length and exc.errno in _UNSUPPORTED:
                raise Unsupported from exc
            raise NbdConnectionError(f"receive failed: {exc.strerror}", server=src.server) from exc
        if got == 0:
            raise NbdConnectionError("server closed the connection", server=src.server)
        remaining -= got
        while got:
            try:
                sent = os.splice(pipe.read_fd, tgt_fd, got)
            except BlockingIOError:
                _wait(tgt_fd, select.POLLOUT, tgt.timeout, tgt, "send failed")
                continue
            except OSError as exc:
                raise NbdConnectionError(f"send failed: {exc.strerror}", server=tgt.server) from exc
            got -= sent
