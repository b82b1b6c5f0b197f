"""Plan building of the vSphere source (unit tests with a stand-in CBT client)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vma.errors import VmwareError
from vma.sources.base import DiskRequest
from vma.sources.vsphere import VSphereSource, vddk_argv

VM = {"id": "uuid-1", "moref": "vm-42", "disks": [{"key": "2000", "vmdk_path": "[ds] a/a.vmdk"}]}


class FakeCbt:
    """Answers like VSphereClient: changed areas per change ID (one function under test)."""

    def __init__(self, areas=None, fail=False):
        self.areas = areas or {}
        self.fail = fail
        self.calls = []

    def disk_change_ids(self, vm_id, snapshot_id):
        return {"2000": "52 aa/5"}

    def query_changed_areas(self, vm_id, snapshot_id, disk_key, change_id):
        self.calls.append(change_id)
        if self.fail and change_id != "*":
            raise VmwareError("FileFault: change tracking was reset")
        return self.areas.get(change_id, [])


def _source(client):
    return VSphereSource(client, server="vc", user="u", password="secret-pw", env=os.environ)


def test_incremental_writes_cbt_extents(tmp_path):
    client = FakeCbt({"52 aa/4": [(0, 65536), (1 << 20, 131072)]})
    disk = _source(client).plan_disk(
        VM, "snapshot-1", DiskRequest("2000", "52 aa/4"), {"2000": "52 aa/5"}, tmp_path
    )
    assert (disk.mode, disk.change_id, disk.note) == ("incremental", "52 aa/5", None)
    extents = json.loads(Path(disk.changed_extents_file).read_text())
    assert extents == [{"start": 0, "length": 65536}, {"start": 1 << 20, "length": 131072}]


def test_full_with_cbt_is_a_full_copy_that_records_the_change_id(tmp_path):
    """A full copy zeroes holes on a reused target; CBT's "*" areas would leave old bytes."""
    client = FakeCbt({"*": [(0, 4096)]})
    disk = _source(client).plan_disk(VM, "s", DiskRequest("2000"), {"2000": "52 aa/5"}, tmp_path)
    assert client.calls == []
    assert (disk.mode, disk.change_id, disk.note) == ("full", "52 aa/5", None)


def test_cbt_reset_falls_back_to_full(tmp_path):
    client = FakeCbt({"*": [(0, 4096)]}, fail=True)
    disk = _source(client).plan_disk(
        VM, "s", DiskRequest("2000", "52 aa/1"), {"2000": "52 aa/5"}, tmp_path
    )
    assert client.calls == ["52 aa/1"]
    assert (disk.mode, disk.change_id) == ("full", "52 aa/5")
    assert "unavailable" in disk.note


def test_cbt_off_copies_everything(tmp_path):
    disk = _source(FakeCbt()).plan_disk(
        VM, "s", DiskRequest("2000", "52 aa/1"), {"2000": None}, tmp_path
    )
    assert (disk.mode, disk.change_id, disk.changed_extents_file) == ("full", None, None)
    assert "CBT is off" in disk.note


def test_vddk_argv_keeps_the_password_off_the_command_line(tmp_path):
    argv = vddk_argv(
        nbdkit="nbdkit",
        libdir="/vddk",
        server="vc",
        user="u",
        password_file=tmp_path / "pw",
        thumbprint="AA:BB",
        vm_moref="vm-42",
        snapshot_id="snapshot-7",
        vmdk_path="[ds] a/a.vmdk",
        socket_path=tmp_path / "s.sock",
    )
    assert f"password=+{tmp_path / 'pw'}" in argv
    assert "--readonly" in argv and "vm=moref=vm-42" in argv and "snapshot=snapshot-7" in argv
    assert not any("secret" in a for a in argv)


def test_prepare_without_vddk_fails_cleanly(tmp_path):
    """Real nbdkit without the VDDK plugin: a SourceError, no process or password file left."""
    import pytest

    from vma.errors import SourceError
    from vma.services import processes

    source = _source(FakeCbt({"*": [(0, 4096)]}))
    with pytest.raises(SourceError, match="nbdkit-vddk for disk 2000 exited before serving"):
        source.prepare(VM, "snapshot-1", [DiskRequest("2000")], tmp_path)
    assert not (tmp_path / "vcenter-password").exists()
    log = (tmp_path / "nbdkit-2000.log").read_text()
    assert "secret-pw" not in log
    assert not any(
        "vddk" in " ".join(p.args) for p in processes._children.values() if p.poll() is None
    )
