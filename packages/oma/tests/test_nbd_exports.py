"""ExportManager with real qemu-nbd processes; bytes written through NBD land on the device."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labtest.nbd import qemu_nbd
from labtest.procs import free_port
from oma.errors import NbdExportError
from oma.nbd import ExportManager

MIB = 1024 * 1024


def _sparse(path: Path, size: int = 16 * MIB) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def _port_block(n: int = 8) -> tuple[int, int]:
    base = free_port()
    base = min(base, 65535 - n)
    return base, base + n - 1


@pytest.fixture
def manager(tmp_path) -> Iterator[ExportManager]:
    mgr = ExportManager(state_dir=tmp_path / "nbd", port_range=_port_block())
    yield mgr
    for info in mgr.list_running():
        mgr.stop(info.pid, info.volume_id)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_through_export_lands_on_device(tmp_path, manager) -> None:
    dev = _sparse(tmp_path / "vdb")
    info = manager.start("11111111-2222-3333-4444-555555555555", str(dev))
    assert info.export_name == "vol-11111111-2222-3333-4444-555555555555"
    assert info.uri == f"nbd://127.0.0.1:{info.port}/{info.export_name}"
    assert manager.port_range[0] <= info.port <= manager.port_range[1]
    out = subprocess.run(
        ["qemu-io", "-f", "raw", info.uri, "-c", "write -P 0xab 1M 2M", "-c", "flush"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 2097152/2097152 bytes" in out.stdout
    expected = bytearray(16 * MIB)
    expected[MIB : 3 * MIB] = b"\xab" * (2 * MIB)
    assert _sha(dev) == hashlib.sha256(expected).hexdigest()
    # nbdcopy over a second connection, then read back through NBD
    src = tmp_path / "src.raw"
    src.write_bytes(os.urandom(16 * MIB))
    subprocess.run(["nbdcopy", str(src), info.uri], check=True)
    assert _sha(dev) == _sha(src)
    back = tmp_path / "back.raw"
    subprocess.run(["nbdcopy", info.uri, str(back)], check=True)
    assert _sha(back) == _sha(src)


def test_stop_and_port_reuse(tmp_path, manager) -> None:
    dev = _sparse(tmp_path / "vdb")
    first = manager.start("vol-a", str(dev))
    assert manager.is_running(first.pid, "vol-a")
    assert not manager.is_running(first.pid, "vol-b")  # same pid, other export
    assert not manager.is_running(os.getpid(), "vol-a")  # not a qemu-nbd
    manager.stop(first.pid, "vol-a")
    assert not manager.is_running(first.pid, "vol-a")
    assert manager.get("vol-a") is None and manager.list_running() == []
    manager.stop(first.pid, "vol-a")  # already stopped: a no-op
    second = manager.start("vol-b", str(dev))
    assert second.port == first.port and second.pid != first.pid


def test_used_ports_and_list_running(tmp_path, manager) -> None:
    low = manager.port_range[0]
    a = manager.start("a", str(_sparse(tmp_path / "a")), used_ports={low})
    b = manager.start("b", str(_sparse(tmp_path / "b")))
    assert a.port != low and b.port == low  # used_ports only applies to that call
    with qemu_nbd(_sparse(tmp_path / "foreign"), fmt="raw", export="vol-foreign"):
        running = manager.list_running()
    assert sorted((e.volume_id, e.pid, e.port) for e in running) == sorted(
        [("a", a.pid, a.port), ("b", b.pid, b.port)]
    )


def test_an_export_whose_record_was_never_written_is_found_and_stopped(tmp_path, manager) -> None:
    """A worker killed between qemu-nbd's fork and writing the record leaves a process that
    names this manager's pid file: reconciliation must still see it and stop it."""
    info = manager.start("c", str(_sparse(tmp_path / "c")))
    manager._state_path("c").unlink()  # as if killed before the record
    assert manager.get("c") is None
    running = manager.list_running()
    assert [(e.volume_id, e.pid, e.port) for e in running] == [("c", info.pid, info.port)]
    manager.stop(running[0].pid, "c")
    assert manager.list_running() == [] and not manager.is_running(info.pid, "c")


def test_start_is_idempotent_and_replaces_stale_device(tmp_path, manager) -> None:
    dev1, dev2 = _sparse(tmp_path / "d1"), _sparse(tmp_path / "d2")
    one = manager.start("v", str(dev1))
    assert manager.start("v", str(dev1)) == one
    two = manager.start("v", str(dev2))
    assert two.pid != one.pid and two.device_path == str(dev2)
    assert not manager.is_running(one.pid, "v")
    assert [e.pid for e in manager.list_running()] == [two.pid]


def test_export_survives_the_worker_and_is_found_again(tmp_path) -> None:
    dev = _sparse(tmp_path / "vdb")
    state = tmp_path / "nbd"
    low, high = _port_block()
    script = (
        "import json, sys\nfrom pathlib import Path\nfrom oma.nbd import ExportManager\n"
        f"m = ExportManager(state_dir=Path({str(state)!r}), port_range=({low}, {high}))\n"
        f"i = m.start('survivor', {str(dev)!r})\nprint(json.dumps(i.__dict__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    started = json.loads(out.stdout)
    mgr = ExportManager(state_dir=state, port_range=(low, high))
    try:
        found = mgr.list_running()
        assert [(e.volume_id, e.pid, e.port) for e in found] == [
            ("survivor", started["pid"], started["port"])
        ]
        with socket.create_connection(("127.0.0.1", started["port"]), timeout=5):
            pass
    finally:
        mgr.stop(started["pid"], "survivor")
    assert not mgr.is_running(started["pid"], "survivor")


def test_errors(tmp_path) -> None:
    with pytest.raises(NbdExportError, match="does not exist"):
        ExportManager(state_dir=tmp_path).start("x", str(tmp_path / "missing"))
    dev = _sparse(tmp_path / "d")
    bad = ExportManager(
        state_dir=tmp_path, qemu_nbd=str(tmp_path / "no-qemu-nbd"), port_range=_port_block()
    )
    with pytest.raises(NbdExportError, match="not found"):
        bad.start("x", str(dev))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        full = ExportManager(state_dir=tmp_path, port_range=(port, port))
        with pytest.raises(NbdExportError, match="no free port"):
            full.start("x", str(dev))
    with pytest.raises(ValueError, match="port_range"):
        ExportManager(state_dir=tmp_path, port_range=(10, 5))


def test_production_cache_none_aio_native_export(tmp_path) -> None:
    """OMA_NBD_CACHE=none + OMA_NBD_AIO=native (O_DIRECT), as on a real block device."""
    from oma.config import load_config
    from oma.services.worker import build_worker

    cfg = load_config(
        environ={
            "OMA_DATA_DIR": str(tmp_path / "data"),
            "OMA_NBD_CACHE": "none",
            "OMA_NBD_AIO": "native",
            "OMA_NBD_PORT_RANGE": "{}-{}".format(*_port_block()),
        }
    )
    worker = build_worker(cfg)
    mgr = worker.exports
    try:
        assert (mgr.cache, mgr.aio) == ("none", "native")
        dev = _sparse(tmp_path / "vdc")
        info = mgr.start("66666666-2222-3333-4444-555555555555", str(dev))
        argv = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--cache=none" in argv and b"--aio=native" in argv
        subprocess.run(
            ["qemu-io", "-f", "raw", info.uri, "-c", "write -P 0x5a 4M 1M", "-c", "flush"],
            capture_output=True,
            check=True,
        )
        expected = bytearray(16 * MIB)
        expected[4 * MIB : 5 * MIB] = b"\x5a" * MIB
        assert _sha(dev) == hashlib.sha256(expected).hexdigest()
    finally:
        for running in mgr.list_running():
            mgr.stop(running.pid, running.volume_id)
        worker.close()
