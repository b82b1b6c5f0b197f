"""Full copies against real servers: qemu-nbd (TCP and unix) and nbdkit; sha256 of files."""

from __future__ import annotations

from pathlib import Path

import pytest

from labtest import nbd as labnbd

from .conftest import MiB, copy_json, make_sparse_random, nbdkit, run_mk, sha256_file

pytestmark = pytest.mark.slow


def test_sparse_random_full_copy_over_tcp_is_byte_identical(tmp_path: Path, raw_export) -> None:
    size = 48 * MiB
    src = make_sparse_random(tmp_path / "src.raw", size, seed=7)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\xee" * size)  # stale bytes everywhere: holes must be zeroed
    s = raw_export(src, readonly=True)
    t = raw_export(dst)
    out = copy_json(s.uri, t.uri, "--verify")
    assert sha256_file(dst) == sha256_file(src)
    assert out["status"] == "completed" and out["sync_type"] == "full"
    assert out["digest"] == sha256_file(src)
    assert out["bytes_total"] == size == out["bytes_written"] + out["bytes_zeroed"]
    assert 0 < out["bytes_written"] < size


def test_full_copy_into_zero_target_skips_holes_over_unix_sockets(
    tmp_path: Path, raw_export, sockdir: Path
) -> None:
    size = 32 * MiB
    src = make_sparse_random(tmp_path / "src.raw", size, seed=11, data_share=0.2)
    dst = tmp_path / "dst.raw"
    with open(dst, "wb") as fh:
        fh.truncate(size)
    s = raw_export(src, readonly=True, unix_dir=str(sockdir), export="src")
    t = raw_export(dst, unix_dir=str(sockdir), export="dst")
    assert s.uri.startswith("nbd+unix:///src?socket=")
    out = copy_json(s.uri, t.uri, "--target-is-zero", "--request-size", "256K")
    assert sha256_file(dst) == sha256_file(src)
    assert out["bytes_zeroed"] == 0
    assert out["bytes_total"] == out["bytes_written"] < size


def test_qcow2_source_into_nbdkit_file_target(tmp_path: Path, sockdir: Path) -> None:
    size = 16 * MiB
    image = labnbd.create_image(tmp_path / "src.qcow2", size)
    labnbd.qemu_io(
        image,
        "write -P 0xab 0 1M",
        "write -P 0x5a 5M 3M",
        "write -z 9M 1M",
        "write -P 0x01 16380k 4k",
    )
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\xff" * size)
    proc = nbdkit(["file", f"file={dst}"], sockdir / "t.sock", tmp_path / "nbdkit.log")
    try:
        with labnbd.qemu_nbd(image, readonly=True) as s:
            out = copy_json(
                s.uri,
                f"nbd+unix:///?socket={sockdir / 't.sock'}",
                "--verify",
                "--connections",
                "3",
                "--window",
                "4",
            )
    finally:
        proc.stop()
    labnbd.qemu_img("convert", "-f", "qcow2", "-O", "raw", str(image), str(tmp_path / "r.raw"))
    assert sha256_file(dst) == sha256_file(tmp_path / "r.raw")
    # data moved = allocated qcow2 clusters (64 KiB), never the 16 MiB virtual size
    assert out["bytes_written"] == 4 * MiB + 64 * 1024
    assert out["bytes_zeroed"] == size - out["bytes_written"]


def test_target_larger_than_source_keeps_its_tail(tmp_path: Path, raw_export) -> None:
    src = make_sparse_random(tmp_path / "src.raw", 8 * MiB, seed=3)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x42" * (12 * MiB))
    out = copy_json(raw_export(src, readonly=True).uri, raw_export(dst).uri, "--verify")
    assert out["status"] == "completed"
    assert sha256_file(dst, 8 * MiB) == sha256_file(src)
    assert dst.read_bytes()[8 * MiB :] == b"\x42" * (4 * MiB)


def test_single_client_servers_work_with_verify(tmp_path: Path) -> None:
    """qemu-nbd serving one client at a time (-e 1, no multi-conn): one connection per step."""
    src = make_sparse_random(tmp_path / "src.raw", 8 * MiB, seed=21)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x55" * (8 * MiB))
    with (
        labnbd.qemu_nbd(src, fmt="raw", readonly=True, connections=1) as s,
        labnbd.qemu_nbd(dst, fmt="raw", connections=1) as t,
    ):
        out = copy_json(s.uri, t.uri, "--verify", "--connections", "4")
    assert out["connections"] == 1 and out["status"] == "completed"
    assert sha256_file(dst) == sha256_file(src)


def test_source_without_structured_replies_is_copied_as_all_data(
    tmp_path: Path, sockdir: Path
) -> None:
    src = make_sparse_random(tmp_path / "src.raw", 8 * MiB, seed=5)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x33" * (8 * MiB))
    s = nbdkit(["--no-sr", "file", f"file={src}"], sockdir / "s.sock", tmp_path / "s.log")
    try:
        with labnbd.qemu_nbd(dst, fmt="raw") as t:
            uri = f"nbd+unix:///?socket={sockdir / 's.sock'}"
            out = copy_json(uri, t.uri)
            res = run_mk("copy", "--progress", "off", "--dirty-bitmap", "b1", uri, t.uri)
    finally:
        s.stop()
    assert sha256_file(dst) == sha256_file(src)
    assert out["bytes_written"] == 8 * MiB and out["bytes_zeroed"] == 0
    assert res.returncode == 1 and "structured replies" in res.stderr
