"""The NBD client against real servers (qemu-nbd, nbdkit) and a misbehaving one."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from labtest import nbd as labnbd
from migratekit import (
    NbdClient,
    NbdCommandError,
    NbdConnectionError,
    NbdHandshakeError,
    NbdProtocolError,
    parse_uri,
)
from migratekit.copy._extents import allocation, dirty_ranges
from migratekit.nbd import BASE_ALLOCATION

from .conftest import MiB, nbdkit

pytestmark = pytest.mark.slow


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = labnbd.create_image(tmp_path / "a.qcow2", 8 * MiB)
    labnbd.qemu_io(img, "write -P 0xaa 0 64k", "write -P 0xbb 1M 128k", "write -z 2M 64k")
    labnbd.add_bitmap(img, "b1")
    labnbd.qemu_io(img, "write -P 0xcc 4M 4k")
    return img


def nbdinfo_map(uri: str, context: str = "base:allocation") -> list[dict]:
    out = subprocess.run(
        ["nbdinfo", "--json", f"--map={context}", uri], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def test_handshake_reports_size_flags_and_block_sizes(image: Path) -> None:
    with labnbd.qemu_nbd(image, readonly=True) as s, NbdClient(parse_uri(s.uri)) as c:
        assert c.info.size == 8 * MiB
        assert c.info.read_only and c.info.can_flush and c.info.can_multi_conn
        assert 1 <= c.info.min_block <= 4096 and c.info.max_block == 32 * MiB
        assert not c.structured


def test_allocation_map_matches_nbdinfo(image: Path) -> None:
    with labnbd.qemu_nbd(image, readonly=True) as s:
        expected = [(e["offset"], e["length"], bool(e["type"] & 2)) for e in nbdinfo_map(s.uri)]
        with NbdClient(parse_uri(s.uri), contexts=[BASE_ALLOCATION]) as c:
            got = allocation(c, 0, c.info.size)
    merged: list[tuple[int, int, bool]] = []
    for o, n, z in expected:
        if merged and merged[-1][2] == z:
            merged[-1] = (merged[-1][0], merged[-1][1] + n, z)
        else:
            merged.append((o, n, z))
    assert got == merged


def test_dirty_bitmap_matches_nbdinfo(image: Path) -> None:
    with labnbd.qemu_nbd(image, readonly=True, bitmap="b1") as s:
        expected = [
            (e["offset"], e["length"])
            for e in nbdinfo_map(s.uri, "qemu:dirty-bitmap:b1")
            if e["type"] & 1
        ]
        with NbdClient(parse_uri(s.uri), contexts=[BASE_ALLOCATION, "qemu:dirty-bitmap:b1"]) as c:
            assert dirty_ranges(c, "b1", c.info.size) == expected == [(4 * MiB, 65536)]


def test_structured_read_assembles_data_and_holes(image: Path) -> None:
    with (
        labnbd.qemu_nbd(image, readonly=True) as s,
        NbdClient(parse_uri(s.uri), structured=True) as c,
    ):
        data = c.pread(0, 2 * MiB)
    assert data[:65536] == b"\xaa" * 65536
    assert data[65536:MiB] == bytes(MiB - 65536)
    assert data[MiB : MiB + 131072] == b"\xbb" * 131072


def test_write_zero_flush_and_errors(tmp_path: Path) -> None:
    raw = tmp_path / "w.raw"
    raw.write_bytes(b"\x11" * MiB)
    with labnbd.qemu_nbd(raw, fmt="raw") as s, NbdClient(parse_uri(s.uri)) as c:
        c.pwrite(4096, b"\x22" * 4096)
        c.zero(8192, 8192)
        c.flush()
        assert c.pread(0, 16384) == b"\x11" * 4096 + b"\x22" * 4096 + bytes(8192)
        with pytest.raises(NbdCommandError) as info:
            c.pread(MiB - 512, 4096)  # beyond the end
        assert info.value.offset == MiB - 512 and "read failed" in str(info.value)
    assert raw.read_bytes()[4096:8192] == b"\x22" * 4096


def test_missing_export_and_meta_context_are_named(image: Path) -> None:
    with labnbd.qemu_nbd(image, readonly=True) as s:
        with pytest.raises(NbdHandshakeError, match="export 'nope' refused: export not found"):
            NbdClient(parse_uri(s.uri.replace("/disk", "/nope")))
        with pytest.raises(NbdHandshakeError, match="qemu:dirty-bitmap:zz"):
            NbdClient(parse_uri(s.uri), contexts=["qemu:dirty-bitmap:zz"])


def test_nbdkit_over_unix_socket(tmp_path: Path, sockdir: Path) -> None:
    proc = nbdkit(["memory", "size=1M"], sockdir / "m.sock", tmp_path / "m.log")
    try:
        with NbdClient(parse_uri(f"nbd+unix:///?socket={sockdir / 'm.sock'}")) as c:
            c.pwrite(0, b"abc" * 100)
            assert c.pread(0, 300) == b"abc" * 100
            assert c.info.can_write_zeroes and c.info.can_multi_conn
    finally:
        proc.stop()


def test_connection_refused_is_a_connection_error() -> None:
    from labtest.procs import free_port

    with pytest.raises(NbdConnectionError, match="cannot connect"):
        NbdClient(parse_uri(f"nbd://127.0.0.1:{free_port()}/x"))


def test_not_an_nbd_server_is_a_protocol_error() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn, contextlib.suppress(OSError):
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.recv(100)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        with pytest.raises(NbdProtocolError, match="not an NBD server"):
            NbdClient(parse_uri(f"nbd://127.0.0.1:{port}/x"), timeout=5)
    finally:
        t.join(5)
        server.close()


def test_silent_server_times_out_on_a_blocking_socket(sockdir: Path) -> None:
    """The client's sockets are blocking with kernel timeouts: a server that accepts and
    never answers still ends in a timeout error, not a hang or an EAGAIN message."""
    path = sockdir / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        with pytest.raises(NbdConnectionError, match="receive failed: timed out"):
            NbdClient(parse_uri(f"nbd+unix:///?socket={path}"), timeout=0.2)
    finally:
        server.close()


def test_close_with_reads_in_flight_leaves_the_server_running(
    tmp_path: Path, sockdir: Path
) -> None:
    """What happens to the source when a copy's target fails: its connection is closed with
    reads still in flight, part of a reply already taken. Closed at once, nbdkit 1.32 dies
    within a few rounds (assertion in raw_send_socket); NbdClient.close says NBD_CMD_DISC and
    reads what the server still sends, so the server keeps serving."""
    raw = tmp_path / "src.raw"
    raw.write_bytes(bytes(range(256)) * (4 * MiB // 256))
    sock = sockdir / "s.sock"
    argv = ["--filter=delay", "file", f"file={raw}", "rdelay=20ms"]
    server = nbdkit(argv, sock, tmp_path / "nbdkit.log")
    try:
        uri = parse_uri(f"nbd+unix:///?socket={sock}")
        for round_ in range(40):
            c = NbdClient(uri, timeout=10)
            for i in range(16):
                c.send_read(c.next_handle(), i * 65536, 65536)
            c.recv_exact(1 + round_ * 997 % 30000)  # a reply header and part of its data
            c.close()
            assert server.alive(), (tmp_path / "nbdkit.log").read_text()
        with NbdClient(uri, timeout=10) as c:  # and it still answers correctly
            assert c.pread(65536, 256) == bytes(range(256))
    finally:
        server.stop()


def test_idle_close_leaves_the_server_running(tmp_path: Path, sockdir: Path) -> None:
    """Leaving a ``with`` block normally (every request answered) says NBD_CMD_DISC and
    closes without waiting for the server; the server keeps serving new connections."""
    raw = tmp_path / "src.raw"
    raw.write_bytes(bytes(range(256)) * (MiB // 256))
    sock = sockdir / "i.sock"
    server = nbdkit(["file", f"file={raw}"], sock, tmp_path / "nbdkit.log")
    try:
        uri = parse_uri(f"nbd+unix:///?socket={sock}")
        for round_ in range(20):
            with NbdClient(uri, timeout=10) as c:
                assert c.pread(round_ * 4096, 256) == bytes(range(256))
            assert c._sock is None
            assert server.alive(), (tmp_path / "nbdkit.log").read_text()
    finally:
        server.stop()
