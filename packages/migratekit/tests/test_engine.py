"""Copy engine behaviour with real servers: connection limits, signals, request sizes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from labtest.procs import wait_until
from migration_common import Status

from .conftest import MiB, Recorder, copy_json, nbdkit, sha256_file

pytestmark = pytest.mark.slow


def test_server_refusing_extra_connections_still_completes(tmp_path: Path, sockdir: Path) -> None:
    """nbdkit advertises multi-conn but accepts one client: extra workers bow out."""
    src = tmp_path / "src.raw"
    src.write_bytes(random.Random(1).randbytes(8 * MiB))
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(8 * MiB))
    s = nbdkit(["file", f"file={src}"], sockdir / "s.sock", tmp_path / "s.log")
    t = nbdkit(
        ["--filter=limit", "file", f"file={dst}", "limit=1"], sockdir / "t.sock", tmp_path / "t.log"
    )
    try:
        out = copy_json(
            f"nbd+unix:///?socket={sockdir / 's.sock'}",
            f"nbd+unix:///?socket={sockdir / 't.sock'}",
            "--connections",
            "3",
            "--retries",
            "2",
        )
    finally:
        s.stop()
        t.stop()
    assert out["status"] == "completed" and out["connections"] == 3
    assert sha256_file(dst) == sha256_file(src)


@pytest.mark.parametrize("request_size", ["4K", "100000", "32M"])
def test_request_sizes_all_copy_the_same_bytes(
    tmp_path: Path, raw_export, request_size: str
) -> None:
    src = tmp_path / "src.raw"
    src.write_bytes(random.Random(2).randbytes(3 * MiB + 4096))
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(3 * MiB + 4096))
    out = copy_json(
        raw_export(src, readonly=True).uri,
        raw_export(dst).uri,
        "--request-size",
        request_size,
        "--window",
        "3",
    )
    assert sha256_file(dst) == sha256_file(src)
    assert out["bytes_written"] == 3 * MiB + 4096


def test_sigterm_stops_the_job_and_reports_stopped(tmp_path: Path, sockdir: Path) -> None:
    vma = Recorder()
    vma.thread.start()
    src = tmp_path / "src.raw"
    src.write_bytes(random.Random(3).randbytes(16 * MiB))
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(16 * MiB))
    s = nbdkit(
        ["--filter=delay", "file", f"file={src}", "rdelay=50ms"],
        sockdir / "s.sock",
        tmp_path / "s.log",
    )
    t = nbdkit(["file", f"file={dst}"], sockdir / "t.sock", tmp_path / "t.log")
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "job_id": "j-stop",
                "disks": [
                    {
                        "disk_key": "2000",
                        "source": f"nbd+unix:///?socket={sockdir / 's.sock'}",
                        "target": f"nbd+unix:///?socket={sockdir / 't.sock'}",
                        "change_id": "x",
                    }
                ],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATEKIT_")}
    env["MIGRATEKIT_PROGRESS_INTERVAL"] = "0.1"
    env["MIGRATEKIT_REQUEST_SIZE"] = "64K"
    env["MIGRATEKIT_WINDOW"] = "1"
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "migratekit",
            "run",
            "--plan",
            str(plan),
            "--progress",
            "off",
            "--progress-url",
            vma.url,
            "--report",
            str(report),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_until(
            lambda: any(json.loads(b)["bytes_done"] > 0 for _, _, b in vma.posts),
            timeout=60,
            what="first progress",
            proc=proc,
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        s.stop()
        t.stop()
        vma.server.shutdown()
        vma.server.server_close()
    assert proc.returncode == 143, err
    last = vma.updates("2000")[-1]
    assert last.status is Status.STOPPED and last.change_id is None
    assert 0 < last.bytes_done < last.bytes_total
    doc = json.loads(report.read_text())
    assert doc["disks"][0]["status"] == "stopped"
    assert "disk 2000: stopped" in out


def test_server_block_size_limits_are_respected(tmp_path: Path, sockdir: Path) -> None:
    """Both ends refuse requests over 64 KiB or not 4 KiB-aligned: the copy still works."""
    size = 6 * MiB + 8192
    src = tmp_path / "src.raw"
    src.write_bytes(random.Random(4).randbytes(size))
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x01" * size)
    policy = ["--filter=blocksize-policy"]
    limits = [
        "blocksize-minimum=4096",
        "blocksize-preferred=65536",
        "blocksize-maximum=65536",
        "blocksize-error-policy=error",
    ]
    s = nbdkit([*policy, "file", f"file={src}", *limits], sockdir / "s.sock", tmp_path / "s.log")
    t = nbdkit([*policy, "file", f"file={dst}", *limits], sockdir / "t.sock", tmp_path / "t.log")
    try:
        out = copy_json(
            f"nbd+unix:///?socket={sockdir / 's.sock'}",
            f"nbd+unix:///?socket={sockdir / 't.sock'}",
            "--request-size",
            "4M",
            "--verify",
        )
    finally:
        s.stop()
        t.stop()
    assert out["status"] == "completed" and out["digest"] == sha256_file(src)
    assert sha256_file(dst) == sha256_file(src)


def test_target_without_write_zeroes_gets_zero_data(
    tmp_path: Path, sockdir: Path, raw_export
) -> None:
    from .conftest import make_sparse_random

    src = make_sparse_random(tmp_path / "src.raw", 12 * MiB, seed=6)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x77" * (12 * MiB))
    t = nbdkit(
        ["--filter=nozero", "file", f"file={dst}", "zeromode=none"],
        sockdir / "t.sock",
        tmp_path / "t.log",
    )
    try:
        out = copy_json(
            raw_export(src, readonly=True).uri, f"nbd+unix:///?socket={sockdir / 't.sock'}"
        )
    finally:
        t.stop()
    assert sha256_file(dst) == sha256_file(src)
    assert out["bytes_zeroed"] > 0


@pytest.mark.parametrize("splice", ["1", "0"])
def test_splice_and_buffer_relays_copy_the_same_bytes(
    tmp_path: Path, raw_export, splice: str
) -> None:
    from .conftest import make_sparse_random

    src = make_sparse_random(tmp_path / "src.raw", 16 * MiB, seed=31, data_share=0.6)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x09" * (16 * MiB))
    out = copy_json(
        raw_export(src, readonly=True).uri,
        raw_export(dst).uri,
        "--request-size",
        "3M",
        env={"MIGRATEKIT_SPLICE": splice},
    )
    assert out["status"] == "completed"
    assert sha256_file(dst) == sha256_file(src)


def test_relay_moves_exact_bytes_between_socket_pairs() -> None:
    """splice relay unit: payload bytes go from one socket to another untouched."""
    import socket

    from migratekit.nbd._splice import SplicePipe, relay

    class Fake:
        tls = False

        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.timeout, self.server = sock, 5.0, "fake"

        def fileno(self) -> int:
            return self.sock.fileno()

    a_in, a_out = socket.socketpair()
    b_in, b_out = socket.socketpair()
    payload = random.Random(9).randbytes(3 * MiB + 17)
    pipe = SplicePipe()
    try:
        for s in (a_in, a_out, b_in, b_out):
            s.settimeout(5.0)
        import threading

        feeder = threading.Thread(target=a_in.sendall, args=(payload,))
        feeder.start()
        got = bytearray()

        def drain() -> None:
            while len(got) < len(payload):
                got.extend(b_out.recv(1 << 20))

        reader = threading.Thread(target=drain)
        reader.start()
        relay(Fake(a_out), Fake(b_in), len(payload), pipe)  # type: ignore[arg-type]
        feeder.join(10)
        reader.join(10)
        assert bytes(got) == payload
    finally:
        pipe.close()
        for s in (a_in, a_out, b_in, b_out):
            s.close()


def test_relay_on_blocking_sockets_times_out_when_the_source_stalls() -> None:
    """With kernel timeouts (blocking sockets, SO_RCVTIMEO) a source that stops sending
    mid-payload ends the relay with a timeout error naming the source."""
    import socket
    import struct

    from migratekit import NbdConnectionError
    from migratekit.nbd._splice import SplicePipe, relay

    class Fake:
        tls = False

        def __init__(self, sock: socket.socket, server: str) -> None:
            self.sock, self.timeout, self.server = sock, 0.2, server

        def fileno(self) -> int:
            return self.sock.fileno()

    a_in, a_out = socket.socketpair()
    b_in, b_out = socket.socketpair()
    a_out.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200_000))
    pipe = SplicePipe()
    try:
        a_in.sendall(b"x" * 1000)  # then nothing more
        with pytest.raises(NbdConnectionError, match="receive failed: timed out") as info:
            relay(Fake(a_out, "src"), Fake(b_in, "tgt"), 4000, pipe)  # type: ignore[arg-type]
        assert info.value.server == "src"
        assert b_out.recv(4000) == b"x" * 1000  # what arrived was passed on
    finally:
        pipe.close()
        for s in (a_in, a_out, b_in, b_out):
            s.close()
