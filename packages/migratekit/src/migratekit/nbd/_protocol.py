"""NBD wire format: pure encode/decode of handshake, requests and replies (no IO here).

Everything in this module turns Python values into bytes or bytes into Python values, so it
is tested by feeding bytes. The transport in :mod:`migratekit.nbd._client` does the socket
reads and writes. Reference: the NBD protocol document (``doc/proto.md`` in the NBD project),
fixed newstyle negotiation, structured replies and metadata contexts.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ..errors import NbdProtocolError

# -- handshake -------------------------------------------------------------------------------
NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x0003E889045565A9

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
CLIENT_FLAG_FIXED_NEWSTYLE = 1 << 0
CLIENT_FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7
REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR | 8
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9

OPTION_ERROR_TEXT = {
    REP_ERR_UNSUP: "option not supported by the server",
    REP_ERR_POLICY: "refused by server policy",
    REP_ERR_INVALID: "invalid option request",
    REP_ERR_PLATFORM: "not supported on the server's platform",
    REP_ERR_TLS_REQD: "the server requires TLS",
    REP_ERR_UNKNOWN: "export not found",
    REP_ERR_SHUTDOWN: "the server is shutting down",
    REP_ERR_BLOCK_SIZE_REQD: "the server requires block size negotiation",
    REP_ERR_TOO_BIG: "request too big",
}

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# -- transmission flags (per export) ---------------------------------------------------------
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_ROTATIONAL = 1 << 4
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_SEND_DF = 1 << 7
TFLAG_CAN_MULTI_CONN = 1 << 8
TFLAG_SEND_RESIZE = 1 << 9
TFLAG_SEND_CACHE = 1 << 10
TFLAG_SEND_FAST_ZERO = 1 << 11

# -- requests ----------------------------------------------------------------------------------
REQUEST_MAGIC = 0x25609513
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

COMMAND_NAMES = {
    CMD_READ: "read",
    CMD_WRITE: "write",
    CMD_DISC: "disconnect",
    CMD_FLUSH: "flush",
    CMD_TRIM: "trim",
    CMD_CACHE: "cache",
    CMD_WRITE_ZEROES: "write-zeroes",
    CMD_BLOCK_STATUS: "block-status",
}

# -- replies -----------------------------------------------------------------------------------
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) | 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2

# base:allocation extent flags
STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1
# qemu:dirty-bitmap:NAME extent flag
STATE_DIRTY = 1 << 0

BASE_ALLOCATION = "base:allocation"
DIRTY_BITMAP_PREFIX = "qemu:dirty-bitmap:"

ERRNO_NAMES = {
    1: "EPERM (operation not permitted)",
    5: "EIO (input/output error)",
    12: "ENOMEM (out of memory)",
    22: "EINVAL (invalid argument)",
    28: "ENOSPC (no space left on the target)",
    75: "EOVERFLOW (request too large)",
    95: "ENOTSUP (not supported)",
    108: "ESHUTDOWN (server shutting down)",
}

#: Largest payload qemu-nbd accepts; bigger requests drop the connection.
MAX_REQUEST_DEFAULT = 32 * 1024 * 1024

_REQUEST = struct.Struct(">IHHQQI")
_SIMPLE_REPLY = struct.Struct(">IIQ")
_STRUCTURED_HEADER = struct.Struct(">IHHQI")
_OPTION = struct.Struct(">QII")
_OPTION_REPLY = struct.Struct(">QIII")

REQUEST_SIZE = _REQUEST.size  # 28
SIMPLE_REPLY_SIZE = _SIMPLE_REPLY.size  # 16
STRUCTURED_HEADER_SIZE = _STRUCTURED_HEADER.size  # 20
OPTION_REPLY_SIZE = _OPTION_REPLY.size  # 20
SERVER_GREETING_SIZE = 18


def errno_text(errno: int) -> str:
    """A readable name for an NBD error number."""
    return ERRNO_NAMES.get(errno, f"error {errno}")


# -- handshake encode/decode ------------------------------------------------------------------
def parse_greeting(data: bytes) -> int:
    """Check the 18-byte newstyle greeting and return the server's handshake flags."""
    if len(data) != SERVER_GREETING_SIZE:
        raise NbdProtocolError(f"short greeting ({len(data)} bytes)")
    if data[:8] != NBDMAGIC:
        raise NbdProtocolError("not an NBD server (bad magic)")
    (opt_magic,) = struct.unpack(">Q", data[8:16])
    if opt_magic != IHAVEOPT:
        raise NbdProtocolError("server speaks oldstyle NBD; newstyle is required")
    flags = int.from_bytes(data[16:18], "big")
    if not flags & FLAG_FIXED_NEWSTYLE:
        raise NbdProtocolError("server does not support fixed newstyle negotiation")
    return flags


def encode_client_flags(server_flags: int) -> bytes:
    """The client's 4-byte flags answer to the greeting."""
    flags = CLIENT_FLAG_FIXED_NEWSTYLE
    if server_flags & FLAG_NO_ZEROES:
        flags |= CLIENT_FLAG_NO_ZEROES
    return struct.pack(">I", flags)


def encode_option(option: int, payload: bytes = b"") -> bytes:
    """One option request: IHAVEOPT, option number, length, payload."""
    return _OPTION.pack(IHAVEOPT, option, len(payload)) + payload


def encode_go(export: str, info_requests: tuple[int, ...] = (INFO_BLOCK_SIZE,)) -> bytes:
    """NBD_OPT_GO for ``export``, asking for the given NBD_INFO items."""
    name = export.encode()
    payload = struct.pack(">I", len(name)) + name + struct.pack(">H", len(info_requests))
    payload += b"".join(struct.pack(">H", i) for i in info_requests)
    return encode_option(OPT_GO, payload)


def encode_set_meta_context(export: str, contexts: list[str] | tuple[str, ...]) -> bytes:
    """NBD_OPT_SET_META_CONTEXT for ``export`` with the given context names."""
    name = export.encode()
    payload = struct.pack(">I", len(name)) + name + struct.pack(">I", len(contexts))
    for ctx in contexts:
        raw = ctx.encode()
        payload += struct.pack(">I", len(raw)) + raw
    return encode_option(OPT_SET_META_CONTEXT, payload)


class OptionReply(NamedTuple):
    """Header of one option reply; the payload follows on the wire (``length`` bytes)."""

    option: int
    reply_type: int
    length: int

    @property
    def is_error(self) -> bool:
        """True when the reply type has the error bit."""
        return bool(self.reply_type & REP_FLAG_ERROR)


def parse_option_reply(data: bytes) -> OptionReply:
    """Decode the 20-byte option reply header."""
    magic, option, reply_type, length = _OPTION_REPLY.unpack(data)
    if magic != OPT_REPLY_MAGIC:
        raise NbdProtocolError(f"bad option reply magic {magic:#x}")
    return OptionReply(option, reply_type, length)


def option_error_text(reply: OptionReply, payload: bytes) -> str:
    """A readable message for an error reply (server text appended when given)."""
    text = OPTION_ERROR_TEXT.get(reply.reply_type, f"error {reply.reply_type & 0xFFFF}")
    message = payload.decode(errors="replace").strip()
    return f"{text}: {message}" if message else text


class ExportInfo:
    """What NBD_OPT_GO told us about the export (filled in while the handshake goes on)."""

    __slots__ = ("contexts", "flags", "max_block", "min_block", "preferred_block", "size")

    def __init__(self) -> None:
        self.size = 0
        self.flags = 0
        self.min_block = 1
        self.preferred_block = 4096
        self.max_block = MAX_REQUEST_DEFAULT
        self.contexts: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"ExportInfo(size={self.size}, flags={self.flags:#x}, min_block={self.min_block}, "
            f"preferred_block={self.preferred_block}, max_block={self.max_block}, "
            f"contexts={self.contexts})"
        )

    @property
    def read_only(self) -> bool:
        """The server refuses writes."""
        return bool(self.flags & TFLAG_READ_ONLY)

    @property
    def can_multi_conn(self) -> bool:
        """Several connections see one consistent export (flush on one covers all)."""
        return bool(self.flags & TFLAG_CAN_MULTI_CONN)

    @property
    def can_flush(self) -> bool:
        """NBD_CMD_FLUSH is supported."""
        return bool(self.flags & TFLAG_SEND_FLUSH)

    @property
    def can_write_zeroes(self) -> bool:
        """NBD_CMD_WRITE_ZEROES is supported."""
        return bool(self.flags & TFLAG_SEND_WRITE_ZEROES)

    @property
    def can_fast_zero(self) -> bool:
        """NBD_CMD_FLAG_FAST_ZERO is supported."""
        return bool(self.flags & TFLAG_SEND_FAST_ZERO)

    @property
    def can_trim(self) -> bool:
        """NBD_CMD_TRIM is supported."""
        return bool(self.flags & TFLAG_SEND_TRIM)


def apply_info(info: ExportInfo, payload: bytes) -> None:
    """Apply one NBD_REP_INFO payload to ``info``."""
    if len(payload) < 2:
        raise NbdProtocolError("short NBD_REP_INFO")
    (kind,) = struct.unpack(">H", payload[:2])
    if kind == INFO_EXPORT:
        if len(payload) != 12:
            raise NbdProtocolError("bad NBD_INFO_EXPORT length")
        info.size, info.flags = struct.unpack(">QH", payload[2:])
    elif kind == INFO_BLOCK_SIZE:
        if len(payload) != 14:
            raise NbdProtocolError("bad NBD_INFO_BLOCK_SIZE length")
        info.min_block, info.preferred_block, info.max_block = struct.unpack(">III", payload[2:])
    # NAME, DESCRIPTION and unknown items are ignored, as the protocol allows.


def parse_meta_context(payload: bytes) -> tuple[int, str]:
    """Decode an NBD_REP_META_CONTEXT payload into (context id, name)."""
    if len(payload) < 4:
        raise NbdProtocolError("short NBD_REP_META_CONTEXT")
    (ctx_id,) = struct.unpack(">I", payload[:4])
    return ctx_id, payload[4:].decode(errors="replace")


# -- transmission encode/decode ---------------------------------------------------------------
def encode_request(command: int, handle: int, offset: int, length: int, flags: int = 0) -> bytes:
    """The 28-byte request header (a write's payload follows separately)."""
    return _REQUEST.pack(REQUEST_MAGIC, flags, command, handle, offset, length)


def parse_request(data: bytes) -> tuple[int, int, int, int, int]:
    """Decode a request header into (flags, command, handle, offset, length) (for tests)."""
    magic, flags, command, handle, offset, length = _REQUEST.unpack(data)
    if magic != REQUEST_MAGIC:
        raise NbdProtocolError(f"bad request magic {magic:#x}")
    return flags, command, handle, offset, length


def reply_magic(data: bytes) -> int:
    """The magic number at the start of a reply (first 4 bytes)."""
    return int.from_bytes(data[:4], "big")


def parse_simple_reply(data: bytes) -> tuple[int, int]:
    """Decode a 16-byte simple reply into (error, handle)."""
    magic, error, handle = _SIMPLE_REPLY.unpack(data)
    if magic != SIMPLE_REPLY_MAGIC:
        raise NbdProtocolError(f"bad reply magic {magic:#x}")
    return error, handle


def encode_simple_reply(error: int, handle: int) -> bytes:
    """A simple reply header (for tests and fake servers)."""
    return _SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle)


class ChunkHeader(NamedTuple):
    """Header of one structured reply chunk; ``length`` payload bytes follow."""

    flags: int
    reply_type: int
    handle: int
    length: int

    @property
    def done(self) -> bool:
        """This is the last chunk for the request."""
        return bool(self.flags & REPLY_FLAG_DONE)

    @property
    def is_error(self) -> bool:
        """The chunk reports an error."""
        return bool(self.reply_type & (1 << 15))


def parse_chunk_header(data: bytes) -> ChunkHeader:
    """Decode a 20-byte structured reply chunk header."""
    magic, flags, reply_type, handle, length = _STRUCTURED_HEADER.unpack(data)
    if magic != STRUCTURED_REPLY_MAGIC:
        raise NbdProtocolError(f"bad structured reply magic {magic:#x}")
    return ChunkHeader(flags, reply_type, handle, length)


def encode_chunk(flags: int, reply_type: int, handle: int, payload: bytes) -> bytes:
    """A structured reply chunk (for tests and fake servers)."""
    return (
        _STRUCTURED_HEADER.pack(STRUCTURED_REPLY_MAGIC, flags, reply_type, handle, len(payload))
        + payload
    )


def parse_block_status(payload: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Decode a BLOCK_STATUS chunk into (context id, [(length, flags), ...])."""
    if len(payload) < 4 or (len(payload) - 4) % 8:
        raise NbdProtocolError(f"bad block status payload length {len(payload)}")
    (ctx_id,) = struct.unpack(">I", payload[:4])
    values = struct.unpack(f">{(len(payload) - 4) // 4}I", payload[4:])
    extents = list(zip(values[0::2], values[1::2], strict=True))
    return ctx_id, extents


def parse_error_chunk(reply_type: int, payload: bytes) -> tuple[int, str, int | None]:
    """Decode an error chunk into (errno, message, offset or None)."""
    if len(payload) < 6:
        raise NbdProtocolError("short error chunk")
    errno, msg_len = struct.unpack(">IH", payload[:6])
    message = payload[6 : 6 + msg_len].decode(errors="replace")
    offset = None
    if reply_type == REPLY_TYPE_ERROR_OFFSET and len(payload) >= 6 + msg_len + 8:
        (offset,) = struct.unpack(">Q", payload[6 + msg_len : 14 + msg_len])
    return errno, message, offset


def parse_offset(payload: bytes) -> int:
    """The 8-byte offset at the start of OFFSET_DATA / OFFSET_HOLE payloads."""
    if len(payload) < 8:
        raise NbdProtocolError("short offset chunk")
    return int(struct.unpack(">Q", payload[:8])[0])
