"""Export reconciliation at worker start, with real qemu-nbd processes and a SQLite database."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from labtest.nbd import qemu_io
from labtest.oma import oma_database
from labtest.procs import wait_until
from oma.database.db import database
from oma.database.models import NbdExport, ReplicaVolume, VmContext
from oma.nbd import ExportManager
from oma.services.exports import reconcile_exports

pytestmark = pytest.mark.slow
MiB = 1 << 20
PORTS = (20300, 20340)


@pytest.fixture
def env(tmp_path):
    # the context has no VMA (so no certificate): exports without TLS, allowed here
    exports = ExportManager(port_range=PORTS, state_dir=tmp_path / "exports", allow_plaintext=True)
    with oma_database(tmp_path / "oma.db"), database.connection_context():
        ctx = VmContext.create(vcenter="vc", vm_id=str(uuid.uuid4()), name="vm")
        try:
            yield tmp_path, exports, ctx
        finally:
            for info in exports.list_running():
                exports.stop(info.pid, info.volume_id)


def _volume(tmp_path, ctx, key, *, attached=True):
    vol_id = str(uuid.uuid4())
    device = tmp_path / f"dev-{key}"
    with open(device, "wb") as f:
        f.truncate(4 * MiB)
    return ReplicaVolume.create(
        context=ctx.id,
        disk_key=key,
        cloudstack_volume_id=vol_id,
        size_bytes=4 * MiB,
        device_path=str(device),
        state="attached" if attached else "allocated",
    )


def _record(rv, info):
    return NbdExport.create(
        volume=rv.id,
        host=info.host,
        port=info.port,
        export_name=info.export_name,
        device_path=rv.device_path,
        pid=info.pid,
        state="running",
    )


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie of ours counts as gone
        return f.read().split()[2] == "Z"


def test_live_exports_are_kept(env):
    tmp_path, exports, ctx = env
    rv = _volume(tmp_path, ctx, "2000")
    info = exports.start(rv.cloudstack_volume_id, rv.device_path)
    _record(rv, info)
    result = reconcile_exports(exports, PORTS)
    assert result.kept == [rv.cloudstack_volume_id]
    assert not (result.restarted or result.dead or result.orphans_stopped)
    assert exports.is_running(info.pid, rv.cloudstack_volume_id)


def test_dead_export_is_restarted_on_its_port_and_serves_the_device(env):
    tmp_path, exports, ctx = env
    rv = _volume(tmp_path, ctx, "2000")
    qemu_io(rv.device_path, "write -P 0x5a 0 64k", fmt="raw")
    info = exports.start(rv.cloudstack_volume_id, rv.device_path)
    row = _record(rv, info)
    os.kill(info.pid, signal.SIGKILL)  # our own child export: simulate its crash
    wait_until(lambda: _gone(info.pid), timeout=10, what="qemu-nbd to die")
    result = reconcile_exports(exports, PORTS)
    assert result.restarted == [rv.cloudstack_volume_id]
    row = NbdExport.get_by_id(row.id)
    assert row.state == "running" and row.pid != info.pid and row.port == info.port
    assert exports.is_running(row.pid, rv.cloudstack_volume_id)
    out = qemu_io(f"nbd://127.0.0.1:{row.port}/{row.export_name}", "read -P 0x5a 0 64k", fmt="raw")
    assert "read 65536/65536 bytes" in out


def test_export_of_a_detached_volume_is_marked_dead(env):
    tmp_path, exports, ctx = env
    rv = _volume(tmp_path, ctx, "2000", attached=False)
    NbdExport.create(
        volume=rv.id,
        host="127.0.0.1",
        port=PORTS[0],
        export_name="vol-x",
        pid=None,
        state="running",
    )
    result = reconcile_exports(exports, PORTS)
    assert result.dead == [rv.cloudstack_volume_id]
    assert NbdExport.get().state == "dead"


def test_orphan_exports_are_stopped(env):
    tmp_path, exports, ctx = env
    known = _volume(tmp_path, ctx, "2000")
    orphan = _volume(tmp_path, ctx, "2001")
    kept = exports.start(known.cloudstack_volume_id, known.device_path)
    _record(known, kept)
    lost = exports.start(orphan.cloudstack_volume_id, orphan.device_path)  # no row: orphan
    result = reconcile_exports(exports, PORTS)
    assert result.orphans_stopped == [lost.pid]
    assert [e.volume_id for e in exports.list_running()] == [known.cloudstack_volume_id]


def test_restart_finds_the_device_again_by_serial_not_by_the_old_path(env):
    from oma.cloudstack import device_serial

    tmp_path, exports, ctx = env
    rv = _volume(tmp_path, ctx, "2000")
    qemu_io(rv.device_path, "write -P 0x3c 0 64k", fmt="raw")
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / f"virtio-{device_serial(rv.cloudstack_volume_id)}").symlink_to(rv.device_path)
    info = exports.start(rv.cloudstack_volume_id, rv.device_path)
    row = _record(rv, info)
    os.kill(info.pid, signal.SIGKILL)
    wait_until(lambda: _gone(info.pid), timeout=10, what="qemu-nbd to die")
    # after a "reboot" the remembered path names another disk
    other = tmp_path / "dev-other"
    with open(other, "wb") as f:
        f.truncate(4 * MiB)
    ReplicaVolume.update(device_path=str(other)).where(ReplicaVolume.id == rv.id).execute()
    result = reconcile_exports(exports, PORTS, by_id)
    assert result.restarted == [rv.cloudstack_volume_id]
    assert ReplicaVolume.get_by_id(rv.id).device_path == rv.device_path
    row = NbdExport.get_by_id(row.id)
    out = qemu_io(f"nbd://127.0.0.1:{row.port}/{row.export_name}", "read -P 0x3c 0 64k", fmt="raw")
    assert "read 65536/65536 bytes" in out


def test_without_its_by_id_entry_a_dead_export_is_marked_dead(env):
    tmp_path, exports, ctx = env
    rv = _volume(tmp_path, ctx, "2000")
    info = exports.start(rv.cloudstack_volume_id, rv.device_path)
    _record(rv, info)
    os.kill(info.pid, signal.SIGKILL)
    wait_until(lambda: _gone(info.pid), timeout=10, what="qemu-nbd to die")
    (tmp_path / "empty-by-id").mkdir()
    result = reconcile_exports(exports, PORTS, tmp_path / "empty-by-id")
    assert result.dead == [rv.cloudstack_volume_id]
