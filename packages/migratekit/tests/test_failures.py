"""Failures: servers killed mid-copy, server errors, bad input — never a silent success."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labtest.procs import wait_until

from .conftest import MiB, copy_json, make_sparse_random, nbdkit, run_mk, sha256_file

pytestmark = pytest.mark.slow

SIZE = 24 * MiB


def dense(path: Path, size: int = SIZE, seed: int = 1) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def start_copy(src_uri: str, dst_uri: str, log: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATEKIT_")}
    env["MIGRATEKIT_PROGRESS_INTERVAL"] = "0.1"
    env["MIGRATEKIT_FLUSH_EVERY"] = "1M"  # exercise periodic flushes and the redo after them
    with open(log, "w") as fh:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "migratekit",
                "copy",
                "--json",
                "--progress",
                "plain",
                "--disk-key",
                "2000",
                "--request-size",
                "64K",
                "--window",
                "2",
                *extra,
                src_uri,
                dst_uri,
            ],
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            env=env,
        )


def copying(log: Path) -> bool:
    return re.search(r"phase=copy status=running done=[1-9]", log.read_text()) is not None


def test_source_killed_mid_copy_gives_a_clear_error(tmp_path: Path, sockdir: Path) -> None:
    src = dense(tmp_path / "src.raw")
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(SIZE))
    sock = sockdir / "s.sock"
    source = nbdkit(
        ["--filter=delay", "file", f"file={src}", "rdelay=20ms"], sock, tmp_path / "s.log"
    )
    target = nbdkit(["file", f"file={dst}"], sockdir / "t.sock", tmp_path / "t.log")
    log = tmp_path / "mk.log"
    proc = start_copy(
        f"nbd+unix:///?socket={sock}",
        f"nbd+unix:///?socket={sockdir / 't.sock'}",
        log,
        "--retries",
        "2",
    )
    try:
        wait_until(lambda: copying(log), timeout=60, what="copy progress", proc=proc)
        source.kill()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        source.stop()
        target.stop()
    err = log.read_text()
    assert proc.returncode == 1
    last = [line for line in err.splitlines() if line.startswith("error: ")][-1]
    assert "disk 2000" in last and "gave up after 2 reconnects" in last
    assert re.search(r"copying at offset \d+: ", last)
    assert str(sock) in last
    assert '"status": "failed"' in out
    assert re.search(r"phase=copy status=failed", err)


@pytest.mark.parametrize("side", ["source", "target"])
def test_server_restarted_mid_copy_is_retried_to_identical_bytes(
    tmp_path: Path, sockdir: Path, side: str
) -> None:
    src = dense(tmp_path / "src.raw", seed=3)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(SIZE))
    socks = {"source": sockdir / "s.sock", "target": sockdir / "t.sock"}
    argv = {
        "source": ["--filter=delay", "file", f"file={src}", "rdelay=20ms"],
        "target": ["--filter=delay", "file", f"file={dst}", "wdelay=20ms"],
    }
    servers = {k: nbdkit(argv[k], socks[k], tmp_path / f"{k}.log") for k in socks}
    log = tmp_path / "mk.log"
    proc = start_copy(
        f"nbd+unix:///?socket={socks['source']}",
        f"nbd+unix:///?socket={socks['target']}",
        log,
        "--retries",
        "10",
    )
    try:
        wait_until(lambda: copying(log), timeout=60, what="copy progress", proc=proc)
        servers[side].kill()
        socks[side].unlink()
        servers[side] = nbdkit(argv[side], socks[side], tmp_path / f"{side}2.log")
        out, _ = proc.communicate(timeout=180)
        # if the copy failed: were both servers still up, and what did they log?
        state = {k: (v.alive(), v.proc.returncode) for k, v in servers.items()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for server in servers.values():
            server.stop()
    server_logs = "\n".join(
        f"--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(tmp_path.glob("*.log"))
    )
    assert proc.returncode == 0, f"servers (alive, exit code): {state}\n{server_logs}"
    assert sha256_file(dst) == sha256_file(src)
    assert '"reconnects": 0' not in out


def test_read_error_is_reported_with_offset_not_retried(tmp_path: Path, sockdir: Path) -> None:
    src = dense(tmp_path / "src.raw", 4 * MiB)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(4 * MiB))
    sock = sockdir / "e.sock"
    source = nbdkit(
        ["--filter=error", "file", f"file={src}", "error-pread=EIO", "error-pread-rate=100%"],
        sock,
        tmp_path / "e.log",
    )
    target = nbdkit(["file", f"file={dst}"], sockdir / "t.sock", tmp_path / "t.log")
    try:
        res = run_mk(
            "copy",
            "--progress",
            "off",
            "--disk-key",
            "2000",
            f"nbd+unix:///?socket={sock}",
            f"nbd+unix:///?socket={sockdir / 't.sock'}",
        )
    finally:
        source.stop()
        target.stop()
    assert res.returncode == 1
    assert re.search(r"error: disk 2000: read failed: EIO .* at offset \d+", res.stderr)


def test_malformed_uri_is_a_usage_error() -> None:
    res = run_mk("copy", "nbd://127.0.0.1:1/disk", "nbd:/oops")
    assert res.returncode == 2
    assert res.stderr.splitlines()[0] == (
        "error: TARGET_URI: malformed NBD URI 'nbd:/oops': no host"
    )


def test_missing_export_fails_with_its_name(tmp_path: Path, raw_export) -> None:
    src = make_sparse_random(tmp_path / "src.raw", 4 * MiB)
    s = raw_export(src, readonly=True)
    res = run_mk("copy", "--progress", "off", s.uri.replace("/disk", "/nope"), s.uri)
    assert res.returncode == 1
    assert "export 'nope'" in res.stderr and "not found" in res.stderr


def test_target_smaller_than_source_fails_before_writing(tmp_path: Path, raw_export) -> None:
    src = make_sparse_random(tmp_path / "src.raw", 8 * MiB)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x07" * (4 * MiB))
    res = run_mk(
        "copy", "--progress", "off", raw_export(src, readonly=True).uri, raw_export(dst).uri
    )
    assert res.returncode == 1
    assert "is 4194304 bytes, smaller than the source (8388608 bytes)" in res.stderr
    assert dst.read_bytes() == b"\x07" * (4 * MiB)


def test_unknown_bitmap_is_named(tmp_path: Path, raw_export) -> None:
    src = make_sparse_random(tmp_path / "src.raw", 4 * MiB)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(4 * MiB))
    res = run_mk(
        "copy",
        "--progress",
        "off",
        "--dirty-bitmap",
        "nosuch",
        raw_export(src, readonly=True).uri,
        raw_export(dst).uri,
    )
    assert res.returncode == 1
    assert "qemu:dirty-bitmap:nosuch" in res.stderr


def test_verify_detects_a_mismatch(tmp_path: Path, raw_export) -> None:
    """A target that silently drops writes (nbdkit null) must fail verification (exit 3)."""
    src = make_sparse_random(tmp_path / "src.raw", 4 * MiB, seed=8, data_share=0.9)
    s = raw_export(src, readonly=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mk-") as d:
        sock = Path(d) / "n.sock"
        null = nbdkit(["null", "size=4M"], sock, tmp_path / "n.log")
        try:
            res = run_mk(
                "copy", "--progress", "off", "--verify", s.uri, f"nbd+unix:///?socket={sock}"
            )
        finally:
            null.stop()
    assert res.returncode == 3
    assert "verification failed: source sha256" in res.stderr


def test_json_summary_reports_counters(tmp_path: Path, raw_export) -> None:
    src = make_sparse_random(tmp_path / "src.raw", 4 * MiB, seed=12)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(4 * MiB))
    out = copy_json(raw_export(src, readonly=True).uri, raw_export(dst).uri)
    for key in (
        "bytes_read",
        "bytes_written",
        "bytes_zeroed",
        "seconds",
        "bytes_per_second",
        "digest",
    ):
        assert key in out
