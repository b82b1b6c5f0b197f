"""The lab source against real qcow2 images and real qemu-nbd processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from labtest.labvm import create_lab_disk, write_lab_disk
from labtest.procs import ManagedProcess, free_port, wait_until
from vma.errors import SourceError
from vma.services import processes
from vma.sources import bitmaps
from vma.sources.base import DiskRequest
from vma.sources.lab import LabSource

MiB = 1 << 20
VM = {"id": "vm-lab-1", "disks": [{"key": "2000"}, {"key": "2001"}]}


@pytest.fixture
def lab(tmp_path):
    lab_dir = tmp_path / "lab"
    for n, key in enumerate(("2000", "2001")):
        create_lab_disk(lab_dir / VM["id"] / f"{key}.qcow2", 4 * MiB, seed=n)
    work = tmp_path / "work"
    work.mkdir()
    return LabSource(lab_dir, env=os.environ), work


def _names(source, key):
    return [b.name for b in bitmaps.list_bitmaps(source.image(VM["id"], key))]


def _dirty_map(uri: str, bitmap: str) -> list[dict]:
    out = subprocess.run(
        ["nbdinfo", "--json", f"--map=qemu:dirty-bitmap:{bitmap}", uri],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [e for e in json.loads(out) if e["type"] & 1]


def test_full_sync_adds_generation_and_serves_read_only(lab):
    source, work = lab
    disks = [DiskRequest("2000"), DiskRequest("2001", "")]
    prepared, state = source.prepare(VM, "snap-1", disks, work)
    try:
        assert [(p.mode, p.change_id, p.dirty_bitmap) for p in prepared] == [
            ("full", "gen-1", None),
            ("full", "gen-1", None),
        ]
        # reachable only by this job: a 0600 unix socket in the job's 0700 directory
        assert oct(stat.S_IMODE(work.stat().st_mode)) == "0o700"
        for p in prepared:
            assert p.source.startswith("nbd+unix:///disk?socket=")
            sock = Path(p.source.split("socket=", 1)[1])
            assert stat.S_ISSOCK(sock.stat().st_mode)
            assert oct(stat.S_IMODE(sock.stat().st_mode)) == "0o600"
            assert sock.resolve().parent == work.resolve()
        assert all(processes.alive(s["pid"], s["start"]) for s in state.servers)
        info = subprocess.run(
            ["nbdinfo", "--json", prepared[0].source], capture_output=True, text=True, check=True
        ).stdout
        export = json.loads(info)["exports"][0]
        assert export["is_read_only"] is True and export["export-size"] == 4 * MiB
    finally:
        source.finish(state, success=True)
    assert not any(processes.alive(s["pid"], s["start"]) for s in state.servers)
    assert _names(source, "2000") == ["gen-1"]  # gen-0 pruned after success


def test_incremental_serves_the_previous_bitmap(lab):
    source, work = lab
    write_lab_disk(source.lab_dir, VM["id"], "2000", 2 * MiB, (0x11, 65536))
    prepared, state = source.prepare(VM, "snap-1", [DiskRequest("2000", "gen-0")], work)
    try:
        (disk,) = prepared
        assert (disk.mode, disk.dirty_bitmap, disk.change_id, disk.note) == (
            "incremental",
            "gen-0",
            "gen-1",
            None,
        )
        dirty = _dirty_map(disk.source, "gen-0")
        assert [(e["offset"], e["length"]) for e in dirty] == [(2 * MiB, 65536)]
    finally:
        source.finish(state, success=False)
    assert _names(source, "2000") == ["gen-0", "gen-1"]  # failure keeps the old generation


def test_unknown_previous_change_id_falls_back_to_full(lab):
    source, work = lab
    prepared, state = source.prepare(VM, "s", [DiskRequest("2000", "gen-7")], work)
    source.finish(state, success=False)
    assert prepared[0].mode == "full"
    assert "not found" in prepared[0].note


def test_inconsistent_bitmap_is_removed_and_full_copy_chosen(lab):
    source, work = lab
    image = source.image(VM["id"], "2000")
    port = free_port()
    # a writer that dies uncleanly leaves its persistent bitmaps marked in-use
    writer = ManagedProcess(
        ["qemu-nbd", "-f", "qcow2", "-b", "127.0.0.1", "-p", str(port), str(image)],
        name="qemu-nbd-rw",
    ).start()
    writer.wait_port(port)

    def _marked_in_use() -> bool:  # qemu-nbd listens before it opens the image
        out = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, text=True
        ).stdout
        found = json.loads(out or "{}").get("format-specific", {}).get("data", {})
        return any("in-use" in b.get("flags", []) for b in found.get("bitmaps", []))

    wait_until(_marked_in_use, 30, what="qemu-nbd to open the image")
    writer.kill(signal.SIGKILL)
    writer.stop()
    assert not bitmaps.list_bitmaps(image)[0].consistent
    prepared, state = source.prepare(VM, "s", [DiskRequest("2000", "gen-0")], work)
    source.finish(state, success=True)
    assert prepared[0].mode == "full" and "inconsistent" in prepared[0].note
    assert _names(source, "2000") == ["gen-1"]


def test_missing_image_is_a_source_error_and_nothing_keeps_running(lab):
    source, work = lab
    with pytest.raises(SourceError, match="lab image for disk 9999 missing"):
        source.prepare(VM, "s", [DiskRequest("2000"), DiskRequest("9999")], work)
    logs = list(Path(work).glob("qemu-nbd-2000.log"))
    assert logs  # the first disk's server was started, then stopped again
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(source.image(VM["id"], "2000")) not in out
