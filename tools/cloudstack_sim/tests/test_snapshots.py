"""Volume snapshots: sparse copies, revert in place, state rules."""

from __future__ import annotations

import hashlib

import cs
import pytest

from cloudstack_sim.store import sparse_copy
from labtest.cloudstack import set_settings


def _attached_volume(client, sim):
    vol = client.createVolume(
        name="data", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
    )["volume"]
    client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
    return vol, sim.state_dir / "volumes" / f"{vol['id']}.img"


def _sha(path, limit: int | None = None) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read(limit)).hexdigest()


def test_sparse_copy_keeps_holes_and_bytes(tmp_path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    with open(src, "wb") as fh:
        fh.truncate(8 << 20)
        fh.seek(3 << 20)
        fh.write(b"x" * 4096)
    dst.write_bytes(b"y" * (9 << 20))
    sparse_copy(src, dst)
    assert dst.stat().st_size == 8 << 20 and _sha(dst) == _sha(src)
    assert dst.stat().st_blocks * 512 < 1 << 20


def test_snapshot_and_revert(sim, client) -> None:
    vol, backing = _attached_volume(client, sim)
    with open(backing, "r+b") as fh:
        fh.write(b"before")
    before = _sha(backing, 1 << 20)  # the rest of the 1 GiB volume is a hole
    client.detachVolume(id=vol["id"])  # KVM: no snapshot of a running VM's volume (below)
    snap = client.createSnapshot(volumeid=vol["id"], name="pre-failover")["snapshot"]
    client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
    assert snap["state"] == "BackedUp" and snap["volumeid"] == vol["id"]
    assert client.listSnapshots(volumeid=vol["id"])["snapshot"][0]["id"] == snap["id"]
    with open(backing, "r+b") as fh:
        fh.write(b"after!")
    inode = backing.stat().st_ino
    # the OMA VM runs: revert refused while attached to it
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.revertSnapshot(id=snap["id"])
    assert exc.value.error == {
        "errorcode": 431,
        "errortext": "The VM the specified disk is attached to is not in the shutdown state.",
    }
    client.detachVolume(id=vol["id"])
    client.revertSnapshot(id=snap["id"])
    assert _sha(backing, 1 << 20) == before and backing.stat().st_ino == inode
    assert backing.stat().st_blocks * 512 < 1 << 20  # still sparse
    assert client.deleteSnapshot(id=snap["id"]) == {"success": True}
    assert client.listSnapshots(volumeid=vol["id"]) == {}


def test_snapshot_of_allocated_volume_is_refused(sim, client) -> None:
    vol = client.createVolume(
        name="new", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
    )["volume"]
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.createSnapshot(volumeid=vol["id"])
    assert exc.value.response.status_code == 431
    assert "is not in Ready state but Allocated" in exc.value.error["errortext"]


def test_revert_refused_while_the_vm_has_vm_snapshots(sim, client) -> None:
    vm = client.deployVirtualMachine(
        name="vm1",
        zoneid=sim.zone_id,
        serviceofferingid=sim.service_offering_id,
        templateid=sim.template_id,
        networkids=[sim.network_id],
    )["virtualmachine"]
    root = client.listVolumes(virtualmachineid=vm["id"])["volume"][0]
    client.stopVirtualMachine(id=vm["id"])
    snap = client.createSnapshot(volumeid=root["id"])["snapshot"]
    vm_snap = client.createVMSnapshot(virtualmachineid=vm["id"])["vmsnapshot"]
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.revertSnapshot(id=snap["id"])
    assert exc.value.error["errortext"] == (
        "Unable to revert snapshot for VM, please remove VM snapshots before reverting VM from "
        "snapshot"
    )
    client.deleteVMSnapshot(vmsnapshotid=vm_snap["id"])
    assert client.revertSnapshot(id=snap["id"])["snapshot"]["id"] == snap["id"]


def test_kvm_refuses_a_snapshot_of_a_running_vms_volume(sim, client) -> None:
    """SnapshotManagerImpl.hostSupportsSnapsthotForVolume: off unless kvm.snapshot.enabled."""
    vol, _ = _attached_volume(client, sim)  # attached to the running OMA VM
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.createSnapshot(volumeid=vol["id"])
    assert exc.value.response.status_code == 530
    assert exc.value.error["errortext"].startswith("KVM Snapshot is not supported for Running VMs.")
    assert client.listSnapshots(volumeid=vol["id"]) == {}
    set_settings(sim, **{"kvm.snapshot.enabled": True})
    snap = client.createSnapshot(volumeid=vol["id"])["snapshot"]
    assert snap["state"] == "BackedUp"
