"""NBD wire format: encode and decode bytes (no sockets)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from migratekit.errors import NbdProtocolError
from migratekit.nbd import _protocol as p


def greeting(flags: int) -> bytes:
    return b"NBDMAGIC" + struct.pack(">QH", p.IHAVEOPT, flags)


def test_greeting_accepts_fixed_newstyle_and_answers_no_zeroes() -> None:
    flags = p.parse_greeting(greeting(p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES))
    assert p.encode_client_flags(flags) == struct.pack(">I", 3)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"NOTMAGIC" + struct.pack(">QH", p.IHAVEOPT, 1), "bad magic"),
        (b"NBDMAGIC" + struct.pack(">QH", 0x00420281861253, 1), "oldstyle"),
        (greeting(0), "fixed newstyle"),
        (b"NBDMAGIC", "short"),
    ],
)
def test_bad_greetings_are_named(data: bytes, text: str) -> None:
    with pytest.raises(NbdProtocolError, match=text):
        p.parse_greeting(data)


def test_go_option_layout() -> None:
    raw = p.encode_go("vol-abc")
    magic, option, length = struct.unpack(">QII", raw[:16])
    assert (magic, option, length) == (p.IHAVEOPT, p.OPT_GO, len(raw) - 16)
    assert raw[16:20] == struct.pack(">I", 7) and raw[20:27] == b"vol-abc"
    assert raw[27:] == struct.pack(">HH", 1, p.INFO_BLOCK_SIZE)


def test_set_meta_context_layout() -> None:
    raw = p.encode_set_meta_context("d", ["base:allocation", "qemu:dirty-bitmap:b1"])
    body = raw[16:]
    assert body[:5] == struct.pack(">I", 1) + b"d"
    assert struct.unpack(">I", body[5:9]) == (2,)
    assert body[9:13] == struct.pack(">I", 15) and body[13:28] == b"base:allocation"


def test_option_reply_and_info() -> None:
    head = struct.pack(">QIII", p.OPT_REPLY_MAGIC, p.OPT_GO, p.REP_INFO, 12)
    reply = p.parse_option_reply(head)
    assert (reply.option, reply.reply_type, reply.length, reply.is_error) == (7, 3, 12, False)
    info = p.ExportInfo()
    p.apply_info(
        info,
        struct.pack(
            ">HQH",
            p.INFO_EXPORT,
            1 << 30,
            p.TFLAG_HAS_FLAGS | p.TFLAG_CAN_MULTI_CONN | p.TFLAG_SEND_FLUSH,
        ),
    )
    p.apply_info(info, struct.pack(">HIII", p.INFO_BLOCK_SIZE, 512, 4096, 1 << 25))
    assert info.size == 1 << 30 and info.can_multi_conn and info.can_flush
    assert not info.read_only and not info.can_write_zeroes
    assert (info.min_block, info.preferred_block, info.max_block) == (512, 4096, 1 << 25)


def test_option_error_text_names_the_problem() -> None:
    reply = p.OptionReply(p.OPT_GO, p.REP_ERR_UNKNOWN, 9)
    assert reply.is_error
    assert p.option_error_text(reply, b"no export") == "export not found: no export"
    with pytest.raises(NbdProtocolError):
        p.parse_option_reply(struct.pack(">QIII", 1, 2, 3, 4))


def test_request_round_trip() -> None:
    raw = p.encode_request(p.CMD_WRITE, 77, 1 << 40, 4096, p.CMD_FLAG_FUA)
    assert len(raw) == p.REQUEST_SIZE == 28
    assert p.parse_request(raw) == (p.CMD_FLAG_FUA, p.CMD_WRITE, 77, 1 << 40, 4096)


def test_simple_reply() -> None:
    raw = p.encode_simple_reply(5, 99)
    assert p.reply_magic(raw) == p.SIMPLE_REPLY_MAGIC
    assert p.parse_simple_reply(raw) == (5, 99)
    assert p.errno_text(5).startswith("EIO")
    with pytest.raises(NbdProtocolError, match="magic"):
        p.parse_simple_reply(b"\0" * 16)


def test_structured_block_status_chunk() -> None:
    payload = struct.pack(">I", 3) + struct.pack(">IIII", 65536, 0, 1 << 20, 3)
    chunk = p.encode_chunk(p.REPLY_FLAG_DONE, p.REPLY_TYPE_BLOCK_STATUS, 5, payload)
    header = p.parse_chunk_header(chunk[:20])
    assert header.done and not header.is_error and header.handle == 5
    assert p.parse_block_status(chunk[20:]) == (3, [(65536, 0), (1 << 20, 3)])
    with pytest.raises(NbdProtocolError):
        p.parse_block_status(payload[:-1])


def test_error_chunks() -> None:
    plain = struct.pack(">IH", 28, 4) + b"full"
    assert p.parse_error_chunk(p.REPLY_TYPE_ERROR, plain) == (28, "full", None)
    with_offset = plain + struct.pack(">Q", 8192)
    assert p.parse_error_chunk(p.REPLY_TYPE_ERROR_OFFSET, with_offset) == (28, "full", 8192)
    assert p.parse_chunk_header(p.encode_chunk(0, p.REPLY_TYPE_ERROR, 1, plain)[:20]).is_error


def test_meta_context_reply() -> None:
    assert p.parse_meta_context(struct.pack(">I", 9) + b"base:allocation") == (9, "base:allocation")


def test_protocol_module_does_no_io() -> None:
    source = Path(p.__file__).read_text()
    assert "import socket" not in source and "socket." not in source
