"""createVolume with ``snapshotid``: a Ready DATADISK with the snapshot's bytes, size and disk
offering; the rules of ``VolumeApiServiceImpl.allocVolume``."""

from __future__ import annotations

import cs
import pytest

from cloudstack_sim.store import GIB


def _snapshot_of_written_volume(client, sim, data: bytes):
    vol = client.createVolume(
        name="replica", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
    )["volume"]
    client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
    with open(sim.state_dir / "volumes" / f"{vol['id']}.img", "r+b") as fh:
        fh.seek(4096)
        fh.write(data)
    client.detachVolume(id=vol["id"])  # KVM: no snapshot of a running VM's volume
    return vol, client.createSnapshot(volumeid=vol["id"], name="test-copy")["snapshot"]


def _error(call, **params) -> tuple[int, str]:
    with pytest.raises(cs.CloudStackApiException) as exc:
        call(**params)
    return exc.value.error["errorcode"], exc.value.error["errortext"]


def test_volume_from_snapshot_has_its_bytes_size_and_offering(sim, client) -> None:
    vol, snap = _snapshot_of_written_volume(client, sim, b"as of the snapshot")
    with open(sim.state_dir / "volumes" / f"{vol['id']}.img", "r+b") as fh:
        fh.seek(4096)
        fh.write(b"written afterwards")  # the replica moves on; the copy does not
    # no zoneid: the snapshot's zone; no offering: the snapshot's
    copy = client.createVolume(snapshotid=snap["id"], name="web-test-2000")["volume"]
    assert copy["name"] == "web-test-2000" and copy["id"] != vol["id"]
    assert (copy["type"], copy["state"], copy["size"]) == ("DATADISK", "Ready", 1 * GIB)
    assert copy["diskofferingid"] == sim.custom_disk_offering_id
    assert copy["zoneid"] == sim.zone_id
    backing = sim.state_dir / "volumes" / f"{copy['id']}.img"
    with open(backing, "rb") as fh:
        fh.seek(4096)
        assert fh.read(18) == b"as of the snapshot"
    assert backing.stat().st_size == 1 * GIB
    # a Ready volume: attached to a stopped VM as its root, it boots without being created
    vm = client.deployVirtualMachine(
        name="web-test",
        zoneid=sim.zone_id,
        serviceofferingid=sim.service_offering_id,
        templateid=sim.template_id,
        networkids=[sim.network_id],
        startvm=False,
    )["virtualmachine"]
    root = client.listVolumes(virtualmachineid=vm["id"])["volume"][0]
    client.detachVolume(id=root["id"])
    client.deleteVolume(id=root["id"])
    attached = client.attachVolume(id=copy["id"], virtualmachineid=vm["id"], deviceid=0)
    assert (attached["volume"]["type"], attached["volume"]["deviceid"]) == ("ROOT", 0)
    assert client.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
    # the snapshot can go while the volume made from it stays
    client.deleteSnapshot(id=snap["id"])
    assert client.listVolumes(id=copy["id"])["volume"][0]["state"] == "Ready"


def test_volume_from_snapshot_rules(sim, client) -> None:
    _vol, snap = _snapshot_of_written_volume(client, sim, b"x")
    assert _error(client.createVolume, zoneid=sim.zone_id) == (
        431,
        "At least one of disk Offering ID or snapshot ID must be passed whilst creating volume",
    )
    # a DATADISK snapshot takes no disk offering
    assert _error(
        client.createVolume, snapshotid=snap["id"], diskofferingid=sim.custom_disk_offering_id
    ) == (
        431,
        "Disk Offering ID cannot be passed whilst creating volume from snapshot other than "
        "ROOT disk snapshots",
    )
    code, text = _error(client.createVolume, snapshotid="no-such-snapshot")
    assert code == 431 and "snapshotid" in text
    assert client.listVolumes(name="no-such") == {}


def test_volume_from_a_root_snapshot_with_a_smaller_offering_is_refused(sim, client) -> None:
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
    small = sim.disk_offering_ids["Small"]
    ok = client.createVolume(snapshotid=snap["id"], diskofferingid=small)["volume"]
    assert ok["size"] == 5 * GIB and ok["diskofferingid"] == small
    assert _error(
        client.createVolume,
        snapshotid=snap["id"],
        diskofferingid=sim.custom_disk_offering_id,
        size=1,
    ) == (431, "Invalid size for volume creation: 1GB, snapshot size is: 2GB")
