"""Incremental copies: a qcow2 with a persistent dirty bitmap, qemu-io writes, exact bytes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from labtest import nbd as labnbd

from .conftest import MiB, copy_json, raw_of, sha256_file

pytestmark = pytest.mark.slow

SIZE = 32 * MiB


def dirty_bytes(uri: str, bitmap: str) -> int:
    """Dirty bytes as nbdinfo (libnbd, independent of migratekit) reports them."""
    out = subprocess.run(
        ["nbdinfo", "--json", f"--map=qemu:dirty-bitmap:{bitmap}", uri],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(e["length"] for e in json.loads(out) if e["type"] & 1)


@pytest.fixture
def base_copy(tmp_path: Path):
    """A qcow2 with data, fully copied to a raw target, then a bitmap added to track changes."""
    image = labnbd.create_image(tmp_path / "src.qcow2", SIZE)
    (tmp_path / "rnd").write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB pattern
    labnbd.qemu_io(
        image, "write -P 0x11 0 4M", f"write -s {tmp_path / 'rnd'} 8M 3M", "write -P 0x22 20M 2M"
    )
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x99" * SIZE)
    with labnbd.qemu_nbd(image, readonly=True) as s, labnbd.qemu_nbd(dst, fmt="raw") as t:
        copy_json(s.uri, t.uri)
    assert sha256_file(dst) == sha256_file(raw_of(image, tmp_path / "v1.raw"))
    labnbd.add_bitmap(image, "b1", granularity=65536)
    return image, dst


def mutate(image: Path) -> None:
    """Known changes: new data, an overwrite, a block of old data overwritten with zeroes."""
    labnbd.qemu_io(
        image,
        "write -P 0x33 100k 8k",
        "write -P 0x44 9M 300k",
        "write -z 2M 64k",
        "write -P 0x00 21M 64k",
        "write -P 0x55 30M 1M",
    )


def test_incremental_from_dirty_bitmap_is_exact(tmp_path: Path, base_copy) -> None:
    image, dst = base_copy
    mutate(image)
    with (
        labnbd.qemu_nbd(image, readonly=True, bitmap="b1") as s,
        labnbd.qemu_nbd(dst, fmt="raw") as t,
    ):
        expected = dirty_bytes(s.uri, "b1")
        out = copy_json(s.uri, t.uri, "--dirty-bitmap", "b1", "--verify", "--change-id", "g2")
    assert sha256_file(dst) == sha256_file(raw_of(image, tmp_path / "v2.raw"))
    assert out["sync_type"] == "incremental" and out["change_id"] == "g2"
    moved = out["bytes_written"] + out["bytes_zeroed"]
    assert moved == out["bytes_total"] == expected
    assert out["bytes_zeroed"] >= 64 * 1024  # the block zeroed with write -z was written as zeroes
    assert expected < SIZE // 4


def test_incremental_from_extent_file_writes_zeroed_blocks(tmp_path: Path, base_copy) -> None:
    image, dst = base_copy
    mutate(image)
    changes = [
        {"start": 100 * 1024, "length": 8192},
        {"start": 9 * MiB, "length": 300 * 1024},
        {"start": 2 * MiB, "length": 65536},
        {"start": 21 * MiB, "length": 65536},
        {"start": 30 * MiB, "length": MiB},
    ]
    cbt = tmp_path / "cbt.json"
    cbt.write_text(json.dumps({"changedArea": changes}))
    with labnbd.qemu_nbd(image, readonly=True) as s, labnbd.qemu_nbd(dst, fmt="raw") as t:
        out = copy_json(s.uri, t.uri, "--changed-extents", str(cbt))
    assert sha256_file(dst) == sha256_file(raw_of(image, tmp_path / "v2.raw"))
    assert out["bytes_written"] + out["bytes_zeroed"] == sum(c["length"] for c in changes)


def test_skipping_the_zeroed_block_would_have_been_wrong(tmp_path: Path, base_copy) -> None:
    """Guard for the test itself: the zeroed block really differs between old and new image."""
    image, dst = base_copy
    mutate(image)
    new = raw_of(image, tmp_path / "v2.raw").read_bytes()
    old = dst.read_bytes()
    assert old[2 * MiB : 2 * MiB + 65536] != new[2 * MiB : 2 * MiB + 65536] == bytes(65536)


def test_no_changes_completes_with_nothing_moved(tmp_path: Path, raw_export) -> None:
    src = tmp_path / "src.raw"
    src.write_bytes(b"\x01" * MiB)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"\x02" * MiB)
    empty = tmp_path / "none.json"
    empty.write_text("[]")
    out = copy_json(
        raw_export(src, readonly=True).uri,
        raw_export(dst).uri,
        "--changed-extents",
        str(empty),
        "--change-id",
        "g9",
    )
    assert out["status"] == "completed" and out["change_id"] == "g9"
    assert out["bytes_total"] == out["bytes_written"] == out["bytes_zeroed"] == 0
    assert dst.read_bytes() == b"\x02" * MiB


def test_changed_extent_beyond_the_disk_is_refused(tmp_path: Path, raw_export) -> None:
    from .conftest import run_mk

    src = tmp_path / "src.raw"
    src.write_bytes(b"\x01" * MiB)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([[MiB - 512, 4096]]))
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(MiB))
    res = run_mk(
        "copy",
        "--progress",
        "off",
        "--changed-extents",
        str(bad),
        raw_export(src, readonly=True).uri,
        raw_export(dst).uri,
    )
    assert res.returncode == 1
    assert "ends beyond the source size 1048576" in res.stderr
