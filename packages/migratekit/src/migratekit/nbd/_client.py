"""NBD client transport: one connection over TCP or a unix socket, requests pipelined.

The connection does the handshake (fixed newstyle, optional structured replies and meta
contexts, NBD_OPT_GO with block-size info) and then offers two layers:

* pipelining primitives (:meth:`NbdClient.send_read`, :meth:`send_write`, :meth:`recv_simple`,
  :meth:`recv_into`) used by the copy engine, which keeps many requests in flight on
  connections negotiated *without* structured replies (a read's data then follows its
  16-byte reply header as-is);
* blocking helpers (:meth:`pread`, :meth:`pwrite`, :meth:`zero`, :meth:`flush`,
  :meth:`block_status`) that send one request and wait for its answer, on either kind.

Every socket error becomes :class:`NbdConnectionError` in :func:`_translate` (the one
adapter), naming the server.

An ``nbds://`` URI negotiates TLS right after the greeting (NBD_OPT_STARTTLS, then
:mod:`ssl` with the pinned CA of :class:`~._tls.TlsSettings`); everything after, option
haggling included, goes through TLS. Such a connection never splices (``tls`` is true).

Sockets are blocking with the timeout kept by the kernel (``SO_RCVTIMEO``/``SO_SNDTIMEO``):
a Python-level socket timeout polls before every receive and send, which doubles the system
calls and wake-ups of the copy's hot path. Unix sockets get a larger send buffer
(:data:`SEND_BUFFER`, capped by ``net.core.wmem_max``): a write request of 1 MiB then goes
out in fewer rounds, each of which waits for the server to drain the socket.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import socket
import ssl
import struct
import time
from collections.abc import Iterator, Sequence

from .._log import get_logger
from ..errors import (
    NbdCommandError,
    NbdConnectionError,
    NbdError,
    NbdHandshakeError,
    NbdProtocolError,
)
from . import _protocol as p
from ._tls import TlsSettings
from ._uri import NbdUri

log = get_logger("migratekit.nbd")

#: SO_SNDBUF asked for on unix sockets (the kernel caps it at net.core.wmem_max).
SEND_BUFFER = 4 << 20


def _kernel_timeouts(sock: socket.socket, timeout: float | None) -> None:
    """Make ``sock`` blocking, with ``timeout`` enforced by the kernel on every call.

    A blocking call that runs out of time then fails with EAGAIN (see :func:`_translate`).
    Where the options are refused, the socket keeps Python's own timeout.
    """
    if timeout is not None and timeout <= 0:
        sock.settimeout(timeout)
        return
    if timeout is not None:
        seconds = int(timeout)
        timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        except OSError:
            sock.settimeout(timeout)
            return
    sock.settimeout(None)


@contextlib.contextmanager
def _translate(server: str, what: str) -> Iterator[None]:
    """Turn socket failures into NbdConnectionError naming the server."""
    try:
        yield
    except NbdError:
        raise
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:  # a kernel timeout ran out
        raise NbdConnectionError(f"{what}: timed out", server=server) from exc
    except ssl.SSLError as exc:
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        raise NbdConnectionError(f"{what}: TLS: {reason}", server=server) from exc
    except TimeoutError as exc:
        raise NbdConnectionError(f"{what}: timed out", server=server) from exc
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):  # a kernel timeout ran out
            raise NbdConnectionError(f"{what}: timed out", server=server) from exc
        reason = exc.strerror or exc.__class__.__name__
        raise NbdConnectionError(f"{what}: {reason}", server=server) from exc


class NbdClient:
    """One NBD connection to one export (see the module docstring for the two layers)."""

    def __init__(
        self,
        uri: NbdUri,
        *,
        structured: bool = False,
        contexts: Sequence[str] = (),
        timeout: float | None = 60.0,
        tls: TlsSettings | None = None,
    ) -> None:
        self.uri = uri
        self.server = str(uri)
        self.timeout = timeout
        self.tls_settings = tls
        self.tls = False  # true once the connection runs inside TLS
        self.structured = False
        self.info = p.ExportInfo()
        self._handles = itertools.count(1)
        self._sock: socket.socket | None = None
        self._header = bytearray(p.SIMPLE_REPLY_SIZE)
        self._connect()
        try:
            self._handshake(structured or bool(contexts), list(contexts))
        except BaseException:
            self._close_socket()
            raise

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> None:
        with _translate(self.server, "cannot connect"):
            if self.uri.socket_path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.timeout)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                    sock.connect(self.uri.socket_path)
                except BaseException:
                    sock.close()
                    raise
            else:
                assert self.uri.host is not None
                sock = socket.create_connection((self.uri.host, self.uri.port), self.timeout)
                # Without TCP_NODELAY every handshake round trip stalls ~40 ms (lab-tools.md).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _kernel_timeouts(sock, self.timeout)
        self._sock = sock

    def _handshake(self, structured: bool, contexts: list[str]) -> None:
        with _translate(self.server, "handshake failed"):
            flags = p.parse_greeting(self.recv_exact(p.SERVER_GREETING_SIZE))
            self._send(p.encode_client_flags(flags))
            if self.uri.tls:
                self._starttls()
            try:
                self._negotiate(structured, contexts)
            except NbdConnectionError as exc:
                if not self.tls:
                    raise
                # qemu-nbd checks the client's identity (tls-authz) after the TLS handshake
                raise NbdHandshakeError(
                    f"{exc.reason} after the TLS handshake: the server refused this client "
                    "(its certificate, MIGRATEKIT_TLS_CERT, is not one the export admits)",
                    server=self.server,
                ) from exc
        if self.info.max_block <= 0 or self.info.max_block > p.MAX_REQUEST_DEFAULT:
            self.info.max_block = p.MAX_REQUEST_DEFAULT

    def _negotiate(self, structured: bool, contexts: list[str]) -> None:
        """Options after the greeting (and STARTTLS): structured replies, meta contexts, GO."""
        if structured:
            self._send(p.encode_option(p.OPT_STRUCTURED_REPLY))
            reply, payload = self._option_reply(p.OPT_STRUCTURED_REPLY)
            if reply.is_error:
                raise NbdHandshakeError(
                    "server does not support structured replies (needed for block "
                    "status): " + p.option_error_text(reply, payload),
                    server=self.server,
                )
            self.structured = True
        if contexts:
            self._set_meta_contexts(contexts)
        self._send(p.encode_go(self.uri.export))
        while True:
            reply, payload = self._option_reply(p.OPT_GO)
            if reply.is_error:
                raise NbdHandshakeError(
                    f"export {self.uri.export!r} refused: " + p.option_error_text(reply, payload),
                    server=self.server,
                )
            if reply.reply_type == p.REP_INFO:
                p.apply_info(self.info, payload)
            elif reply.reply_type == p.REP_ACK:
                break

    def _starttls(self) -> None:
        """NBD_OPT_STARTTLS, then the TLS handshake: the server's certificate must chain to
        the pinned CA and name the URI's host."""
        settings = self.tls_settings
        if settings is None:
            raise NbdHandshakeError(
                "an nbds:// URI needs TLS settings (MIGRATEKIT_TLS_CA, MIGRATEKIT_TLS_CERT, "
                "MIGRATEKIT_TLS_KEY)",
                server=self.server,
            )
        self._send(p.encode_option(p.OPT_STARTTLS))
        reply, payload = self._option_reply(p.OPT_STARTTLS)
        if reply.is_error:
            if settings.allow_plaintext:
                log.warning(
                    "NBD server does not offer TLS; continuing in plaintext as allowed",
                    server=self.server,
                )
                return
            raise NbdHandshakeError(
                f"the NBD server at {self.server} does not offer TLS ("
                + p.option_error_text(reply, payload)
                + "); refusing to send data in plaintext (MIGRATEKIT_TLS_ALLOW_PLAINTEXT=true "
                "allows it)",
                server=self.server,
            )
        if reply.reply_type != p.REP_ACK:
            raise NbdProtocolError(
                f"unexpected reply {reply.reply_type} to STARTTLS", server=self.server
            )
        ctx = settings.context()
        hostname = self.uri.host
        if hostname is None:  # a unix socket: the path is the identity, the CA still checked
            ctx.check_hostname = False
        assert self._sock is not None
        raw = self._sock
        try:
            self._sock = ctx.wrap_socket(raw, server_hostname=hostname)
        except ssl.SSLCertVerificationError as exc:
            raise NbdHandshakeError(
                f"TLS handshake failed: certificate verify failed ({exc.verify_message}; the "
                "server's certificate must be signed by the CA in MIGRATEKIT_TLS_CA for this host)",
                server=self.server,
            ) from exc
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            raise NbdHandshakeError(f"TLS handshake failed: {reason}", server=self.server) from exc
        self.tls = True

    def _set_meta_contexts(self, contexts: list[str]) -> None:
        self._send(p.encode_set_meta_context(self.uri.export, contexts))
        while True:
            reply, payload = self._option_reply(p.OPT_SET_META_CONTEXT)
            if reply.is_error:
                raise NbdHandshakeError(
                    "meta contexts refused: " + p.option_error_text(reply, payload),
                    server=self.server,
                )
            if reply.reply_type == p.REP_META_CONTEXT:
                ctx_id, name = p.parse_meta_context(payload)
                self.info.contexts[name] = ctx_id
            elif reply.reply_type == p.REP_ACK:
                break
        missing = [c for c in contexts if c not in self.info.contexts]
        if missing:
            hint = ""
            if any(m.startswith(p.DIRTY_BITMAP_PREFIX) for m in missing):
                hint = " (is the bitmap name right and the export started with -B NAME?)"
            raise NbdHandshakeError(
                f"server does not offer meta context {', '.join(missing)}{hint}",
                server=self.server,
            )

    def _option_reply(self, option: int) -> tuple[p.OptionReply, bytes]:
        reply = p.parse_option_reply(self.recv_exact(p.OPTION_REPLY_SIZE))
        if reply.option != option:
            raise NbdProtocolError(
                f"reply for option {reply.option}, expected {option}", server=self.server
            )
        if reply.length > 1 << 20:
            raise NbdProtocolError("option reply too long", server=self.server)
        payload = self.recv_exact(reply.length) if reply.length else b""
        return reply, payload

    # -- raw IO -------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        assert self._sock is not None, "connection closed"
        with _translate(self.server, "send failed"):
            self._sock.sendall(data)

    def recv_exact(self, size: int) -> bytes:
        """Read exactly ``size`` bytes (EOF → NbdConnectionError)."""
        buf = bytearray(size)
        self.recv_into(memoryview(buf))
        return bytes(buf)

    def recv_into(self, view: memoryview) -> None:
        """Fill ``view`` completely from the socket."""
        sock = self._sock
        assert sock is not None, "connection closed"
        pos, size = 0, len(view)
        with _translate(self.server, "receive failed"):
            while pos < size:
                got = sock.recv_into(view[pos:], size - pos)
                if not got:
                    raise NbdConnectionError("server closed the connection", server=self.server)
                pos += got

    # -- pipelining primitives ------------------------------------------------------------------
    def next_handle(self) -> int:
        """A fresh request handle (cookie) for this connection."""
        return next(self._handles)

    def send_command(
        self, command: int, handle: int, offset: int, length: int, flags: int = 0
    ) -> None:
        """Send a request without payload (read, flush, trim, write-zeroes, block status)."""
        self._send(p.encode_request(command, handle, offset, length, flags))

    def send_read(self, handle: int, offset: int, length: int) -> None:
        """Send NBD_CMD_READ; the answer is read with :meth:`recv_simple` + :meth:`recv_into`."""
        self._send(p.encode_request(p.CMD_READ, handle, offset, length))

    def send_write(
        self, handle: int, offset: int, data: bytes | memoryview, flags: int = 0
    ) -> None:
        """Send NBD_CMD_WRITE with its payload (header and data in one system call)."""
        header = p.encode_request(p.CMD_WRITE, handle, offset, len(data), flags)
        sock = self._sock
        assert sock is not None, "connection closed"
        with _translate(self.server, "send failed"):
            if self.tls:  # SSLSocket has no sendmsg
                sock.sendall(header)
                sock.sendall(data)
                return
            sent = sock.sendmsg([header, data])
            total = len(header) + len(data)
            if sent < total:
                if sent < len(header):
                    sock.sendall(header[sent:])
                    sent = len(header)
                sock.sendall(memoryview(data)[sent - len(header) :])

    def fileno(self) -> int:
        """The socket's file descriptor (for splice)."""
        assert self._sock is not None, "connection closed"
        return self._sock.fileno()

    def send_write_header(self, handle: int, offset: int, length: int, flags: int = 0) -> None:
        """Send only the header of NBD_CMD_WRITE; ``length`` payload bytes must follow."""
        self._send(p.encode_request(p.CMD_WRITE, handle, offset, length, flags))

    def send_raw(self, data: bytes | memoryview) -> None:
        """Send bytes as they are (the payload after :meth:`send_write_header`)."""
        self._send(data)  # type: ignore[arg-type]

    def recv_simple(self) -> tuple[int, int]:
        """Read one simple reply header; return (errno, handle). Read data follows it."""
        view = memoryview(self._header)
        self.recv_into(view)
        error, handle = p.parse_simple_reply(bytes(self._header))
        return error, handle

    # -- blocking helpers ------------------------------------------------------------------------
    def _check(self, command: int, error: int, offset: int, message: str = "") -> None:
        if error:
            what = f"{p.COMMAND_NAMES.get(command, command)} failed: {p.errno_text(error)}"
            if message:
                what += f" ({message})"
            raise NbdCommandError(what, errno=error, server=self.server, offset=offset)

    def _wait(
        self, command: int, handle: int, offset: int, sink: bytearray | None = None, length: int = 0
    ) -> list[tuple[int, list[tuple[int, int]]]]:
        """Wait for the reply to ``handle``; fill ``sink`` for reads; return block status."""
        statuses: list[tuple[int, list[tuple[int, int]]]] = []
        while True:
            head = self.recv_exact(4)
            magic = p.reply_magic(head)
            if magic == p.SIMPLE_REPLY_MAGIC:
                error, got = p.parse_simple_reply(head + self.recv_exact(12))
                self._expect(got, handle)
                self._check(command, error, offset)
                if sink is not None and command == p.CMD_READ:
                    self.recv_into(memoryview(sink)[:length])
                return statuses
            chunk = p.parse_chunk_header(head + self.recv_exact(p.STRUCTURED_HEADER_SIZE - 4))
            self._expect(chunk.handle, handle)
            payload = self.recv_exact(chunk.length) if chunk.length else b""
            if chunk.is_error:
                errno, message, where = p.parse_error_chunk(chunk.reply_type, payload)
                self._check(command, errno or 5, offset if where is None else where, message)
            elif chunk.reply_type == p.REPLY_TYPE_OFFSET_DATA and sink is not None:
                start = p.parse_offset(payload) - offset
                data = payload[8:]
                if start < 0 or start + len(data) > length:
                    raise NbdProtocolError("read chunk outside the request", server=self.server)
                sink[start : start + len(data)] = data
            elif chunk.reply_type == p.REPLY_TYPE_OFFSET_HOLE and sink is not None:
                start = p.parse_offset(payload) - offset
                size = int.from_bytes(payload[8:12], "big")
                if start < 0 or start + size > length:
                    raise NbdProtocolError("hole chunk outside the request", server=self.server)
                sink[start : start + size] = bytes(size)
            elif chunk.reply_type == p.REPLY_TYPE_BLOCK_STATUS:
                statuses.append(p.parse_block_status(payload))
            if chunk.done:
                return statuses

    def _expect(self, got: int, handle: int) -> None:
        if got != handle:
            raise NbdProtocolError(f"reply for unknown handle {got}", server=self.server)

    def pread(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` (one request, waits for the answer)."""
        handle = self.next_handle()
        buf = bytearray(length)
        self.send_command(p.CMD_READ, handle, offset, length)
        self._wait(p.CMD_READ, handle, offset, buf, length)
        return bytes(buf)

    def pwrite(self, offset: int, data: bytes | memoryview, flags: int = 0) -> None:
        """Write ``data`` at ``offset`` and wait for the answer."""
        handle = self.next_handle()
        self.send_write(handle, offset, data, flags)
        self._wait(p.CMD_WRITE, handle, offset)

    def zero(self, offset: int, length: int, flags: int = 0) -> None:
        """NBD_CMD_WRITE_ZEROES over ``length`` bytes at ``offset``."""
        handle = self.next_handle()
        self.send_command(p.CMD_WRITE_ZEROES, handle, offset, length, flags)
        self._wait(p.CMD_WRITE_ZEROES, handle, offset)

    def flush(self) -> None:
        """NBD_CMD_FLUSH: everything acknowledged so far is on stable storage afterwards."""
        if not self.info.can_flush:
            return
        handle = self.next_handle()
        self.send_command(p.CMD_FLUSH, handle, 0, 0)
        self._wait(p.CMD_FLUSH, handle, 0)

    def block_status(self, offset: int, length: int) -> dict[int, list[tuple[int, int]]]:
        """NBD_CMD_BLOCK_STATUS over a range: {context id: [(length, flags), ...]}.

        The server may describe less than ``length`` (callers loop) but never nothing.
        """
        if not self.structured:
            raise NbdProtocolError("block status needs structured replies", server=self.server)
        handle = self.next_handle()
        self.send_command(p.CMD_BLOCK_STATUS, handle, offset, length)
        out: dict[int, list[tuple[int, int]]] = {}
        for ctx_id, extents in self._wait(p.CMD_BLOCK_STATUS, handle, offset):
            out.setdefault(ctx_id, []).extend(extents)
        return out

    # -- teardown -------------------------------------------------------------------------------
    def close(self, timeout: float = 2.0, *, idle: bool = False) -> None:
        """Say goodbye the protocol's way and close, also with requests still in flight.

        NBD_CMD_DISC asks the server to finish what it was sent and close; whatever it still
        sends is read and discarded until it closes (at most ``timeout`` seconds), then the
        socket is closed. Closing at once while the server is still answering can crash it:
        nbdkit 1.32 (Debian 12) aborts in ``raw_send_socket`` when one of its threads writes a
        reply to a connection another thread has just torn down.

        ``idle``: the caller knows every request was answered, so the server has nothing left
        to send: NBD_CMD_DISC is sent and the socket closed without waiting for the server to
        close its end (which can take tens of milliseconds on a busy nbdkit).
        """
        if self._sock is None:
            return
        if idle:
            with contextlib.suppress(OSError):
                self._sock.sendall(p.encode_request(p.CMD_DISC, 0, 0, 0))
            self._close_socket()
            return
        deadline = time.monotonic() + timeout
        sink = bytearray(1 << 16)
        with contextlib.suppress(OSError):
            self._sock.settimeout(timeout)
            self._sock.sendall(p.encode_request(p.CMD_DISC, 0, 0, 0))
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(left)
                if self._sock.recv_into(sink) == 0:
                    break
        self._close_socket()

    def abort(self) -> None:
        """Close the socket at once (after an error on it; no goodbye)."""
        self._close_socket()

    def _close_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Close; leaving the block normally means every request was answered (the blocking
        helpers wait for theirs; code that pipelines requests closes explicitly)."""
        self.close(idle=exc_type is None)
