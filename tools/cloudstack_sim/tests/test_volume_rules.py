"""createVolume/attachVolume/detachVolume rules of VolumeApiServiceImpl and VolumeDaoImpl."""

from __future__ import annotations

import cs
import pytest

from labtest.cloudstack import cloudstack_sim, set_settings

from .conftest import make_client

GIB = 1024**3


def _custom(client, sim, size=1, name="d"):
    return client.createVolume(
        name=name, zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=size
    )["volume"]


def _deploy(client, sim, name="vm1", **kw):
    params = {
        "name": name,
        "zoneid": sim.zone_id,
        "serviceofferingid": sim.service_offering_id,
        "templateid": sim.template_id,
        "networkids": [sim.network_id],
        "startvm": False,
        **kw,
    }
    return client.deployVirtualMachine(**params)["virtualmachine"]


def _error(call, **kw) -> dict:
    with pytest.raises(cs.CloudStackApiException) as exc:
        call(**kw)
    return exc.value.error


def test_size_with_a_fixed_offering_is_refused_even_when_equal(sim, client) -> None:
    small = sim.disk_offering_ids["Small"]
    for size in (5, 6):
        err = _error(
            client.createVolume, name="x", zoneid=sim.zone_id, diskofferingid=small, size=size
        )
        assert err["errorcode"] == 431
        assert err["errortext"] == "This disk offering does not allow custom size"
    vol = client.createVolume(name="x", zoneid=sim.zone_id, diskofferingid=small)["volume"]
    assert vol["size"] == 5 * GIB


def test_custom_size_range_and_positive_size(sim, client) -> None:
    err = _error(
        client.createVolume,
        name="x",
        zoneid=sim.zone_id,
        diskofferingid=sim.custom_disk_offering_id,
        size=1025,
    )
    assert err["errortext"] == "Volume size: 1025 GB is out of allowed range. Min: 1. Max: 1024"
    err = _error(
        client.createVolume,
        name="x",
        zoneid=sim.zone_id,
        diskofferingid=sim.custom_disk_offering_id,
        size=0,
    )
    assert err["errortext"] == "Disk size must be larger than 0"
    err = _error(
        client.createVolume,
        name="x",
        zoneid=sim.zone_id,
        diskofferingid=sim.custom_disk_offering_id,
    )
    assert err["errortext"] == "This disk offering requires a custom size specified"
    # the name is optional: a random uuid
    vol = client.createVolume(
        zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
    )["volume"]
    assert len(vol["name"]) == 36


def test_relaxed_and_tightened_size_limits(tmp_path) -> None:
    settings = {"custom.diskoffering.size.max": 4096, "storage.max.volume.size": 3000}
    with cloudstack_sim(tmp_path, settings=settings) as sim:
        client = make_client(sim)
        try:
            assert _custom(client, sim, size=2048)["size"] == 2048 * GIB
            err = _error(
                client.createVolume,
                name="x",
                zoneid=sim.zone_id,
                diskofferingid=sim.custom_disk_offering_id,
                size=3001,
            )
            assert err["errortext"] == (
                "Requested volume size is 2.9307 TB, but the maximum size allowed is 3000 GB."
            )
            set_settings(sim, **{"storage.max.volume.size": 10})
            err = _error(
                client.createVolume,
                name="x",
                zoneid=sim.zone_id,
                diskofferingid=sim.disk_offering_ids["Medium"],
            )
            assert err["errortext"] == (
                "Requested volume size is 20.00 GB, but the maximum size allowed is 10 GB."
            )
        finally:
            client.session.close()


def test_device_ids_skip_the_cdrom_and_stay_in_range(sim, client) -> None:
    vol = _custom(client, sim)
    for device, text in (
        (3, "deviceId should be 0,1,2,4-33"),
        (34, "deviceId should be 0,1,2,4-33"),
    ):
        err = _error(
            client.attachVolume, id=vol["id"], virtualmachineid=sim.oma_vm_id, deviceid=device
        )
        assert err == {"errorcode": 530, "errortext": text}
    attached = client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id, deviceid=33)
    assert attached["volume"]["deviceid"] == 33


def test_data_volume_limit_of_the_hypervisor(tmp_path) -> None:
    with cloudstack_sim(tmp_path, settings={"sim.kvm.max.data.volumes": 2}) as sim:
        client = make_client(sim)
        try:
            for _ in range(2):
                client.attachVolume(id=_custom(client, sim)["id"], virtualmachineid=sim.oma_vm_id)
            err = _error(
                client.attachVolume, id=_custom(client, sim)["id"], virtualmachineid=sim.oma_vm_id
            )
            assert err == {
                "errorcode": 431,
                "errortext": "The specified VM already has the maximum number of data disks (2) "
                "attached. Please specify another VM.",
            }
        finally:
            client.session.close()


def test_root_detach_makes_datadisk_and_attach_as_0_makes_root(sim, client) -> None:
    vm = _deploy(client, sim)
    root = client.listVolumes(virtualmachineid=vm["id"])["volume"][0]
    detached = client.detachVolume(id=root["id"])["volume"]
    assert detached["type"] == "DATADISK"  # VolumeDaoImpl.detachVolume
    # attached elsewhere it stays a data disk
    other = _deploy(client, sim, name="vm2")
    again = client.attachVolume(id=root["id"], virtualmachineid=other["id"])["volume"]
    assert (again["type"], again["deviceid"]) == ("DATADISK", 1)
    client.detachVolume(id=root["id"])
    back = client.attachVolume(id=root["id"], virtualmachineid=vm["id"], deviceid=0)["volume"]
    assert (back["type"], back["deviceid"]) == ("ROOT", 0)  # VolumeDaoImpl.attachVolume


def test_root_attach_needs_a_stopped_vm(sim, client) -> None:
    vol = _custom(client, sim)
    err = _error(client.attachVolume, id=vol["id"], virtualmachineid=sim.oma_vm_id, deviceid=0)
    assert err["errorcode"] == 431
    assert err["errortext"] == (
        "Root volume detach can happen only when vm is in states: Stopped or Destroyed"
    )


def test_attach_to_a_never_started_vm_leaves_the_volume_allocated(sim, client) -> None:
    vm = _deploy(client, sim)
    vol = client.attachVolume(id=_custom(client, sim)["id"], virtualmachineid=vm["id"])["volume"]
    assert vol["state"] == "Allocated" and vol["deviceid"] == 1
    client.startVirtualMachine(id=vm["id"])
    assert client.listVolumes(id=vol["id"])["volume"][0]["state"] == "Ready"


def test_detach_needs_an_id_or_a_vm_and_device(sim, client) -> None:
    vol = _custom(client, sim)
    client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
    text = "Please provide either a volume id, or a tuple(device id, instance id)"
    assert _error(client.detachVolume, virtualmachineid=sim.oma_vm_id)["errortext"] == text
    assert _error(client.detachVolume, id=vol["id"], deviceid=1)["errortext"] == text
    done = client.detachVolume(virtualmachineid=sim.oma_vm_id, deviceid=1)["volume"]
    assert done["id"] == vol["id"]


def test_vm_snapshot_blocks_attach_and_detach(sim, client) -> None:
    vm = _deploy(client, sim)
    vol = _custom(client, sim)
    client.attachVolume(id=vol["id"], virtualmachineid=vm["id"])
    snap = client.createVMSnapshot(virtualmachineid=vm["id"], name="before")["vmsnapshot"]
    assert snap["state"] == "Ready" and snap["displayname"] == "before"
    listed = client.listVMSnapshot(virtualmachineid=vm["id"])
    assert [s["id"] for s in listed["vmSnapshot"]] == [snap["id"]]
    err = _error(client.detachVolume, id=vol["id"])
    assert err["errortext"] == (
        "Unable to detach volume, please specify a VM that does not have VM snapshots"
    )
    other = _custom(client, sim, name="e")
    err = _error(client.attachVolume, id=other["id"], virtualmachineid=vm["id"])
    assert err["errortext"] == (
        f"Unable to attach volume to VM {vm['instancename']}/{vm['id']}, please specify a VM "
        "that does not have VM snapshots"
    )
    assert client.deleteVMSnapshot(vmsnapshotid=snap["id"]) == {"success": True}
    client.detachVolume(id=vol["id"])
    client.attachVolume(id=other["id"], virtualmachineid=vm["id"])


def test_vm_snapshot_rules(sim, client) -> None:
    vm = _deploy(client, sim)
    err = _error(client.createVMSnapshot, virtualmachineid=vm["id"], snapshotmemory=True)
    assert err["errortext"] == "Can not snapshot memory when VM is in stopped state"
    client.startVirtualMachine(id=vm["id"])
    err = _error(client.createVMSnapshot, virtualmachineid=vm["id"])
    assert err["errortext"] == (
        "KVM VM does not allow to take a disk-only snapshot when VM is in running state"
    )
    snap = client.createVMSnapshot(virtualmachineid=vm["id"], snapshotmemory=True)["vmsnapshot"]
    assert snap["type"] == "DiskAndMemory" and snap["name"].startswith(vm["instancename"] + "_VS_")


def test_backup_offering_blocks_attach_and_detach(tmp_path) -> None:
    with cloudstack_sim(tmp_path) as sim:
        client = make_client(sim)
        try:
            offering = client.listBackupOfferings()["backupoffering"][0]
            vol = _custom(client, sim)
            client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
            # backup.framework.enabled is false by default
            err = _error(
                client.assignVirtualMachineToBackupOffering,
                virtualmachineid=sim.oma_vm_id,
                backupofferingid=offering["id"],
            )
            assert err == {
                "errorcode": 530,
                "errortext": "Backup and Recovery feature is disabled for the zone",
            }
            set_settings(sim, **{"backup.framework.enabled": True})
            client.assignVirtualMachineToBackupOffering(
                virtualmachineid=sim.oma_vm_id, backupofferingid=offering["id"]
            )
            vm = client.listVirtualMachines(id=sim.oma_vm_id)["virtualmachine"][0]
            assert vm["backupofferingid"] == offering["id"]
            err = _error(client.detachVolume, id=vol["id"])
            assert err["errortext"].startswith(
                "Unable to detach volume, cannot detach volume from a VM that has backups."
            )
            other = _custom(client, sim, name="e")
            err = _error(client.attachVolume, id=other["id"], virtualmachineid=sim.oma_vm_id)
            assert err["errortext"].endswith("please specify a VM that does not have any backups")
            # the relaxing setting allows detaching only
            set_settings(sim, **{"backup.enable.attach.detach.of.volumes": True})
            client.detachVolume(id=vol["id"])
            client.removeVirtualMachineFromBackupOffering(virtualmachineid=sim.oma_vm_id)
            client.attachVolume(id=other["id"], virtualmachineid=sim.oma_vm_id)
        finally:
            client.session.close()


def test_attach_delay_keeps_the_job_pending(sim, client) -> None:
    set_settings(sim, **{"sim.attach.delay": 0.5})
    vol = _custom(client, sim)
    started = client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id, fetch_result=False)
    first = client.queryAsyncJobResult(jobid=started["jobid"], fetch_result=False)
    assert first["jobstatus"] == 0
    assert client.listVolumes(id=vol["id"])["volume"][0]["jobstatus"] == 0
    done = client._jobresult(jobid=started["jobid"])
    assert done["volume"]["virtualmachineid"] == sim.oma_vm_id
