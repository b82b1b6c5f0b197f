"""Volumes through the real ``cs`` client: async create, state rules, backing files, by-id links."""

from __future__ import annotations

import os

import cs
import pytest

from cloudstack_sim import device_serial
from labtest.cloudstack import inject_fault

GIB = 1024**3


def _create(client, sim, name="data", size=1):
    return client.createVolume(
        name=name, zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=size
    )["volume"]


def test_async_create_then_query(sim, client) -> None:
    inject_fault(sim, "createVolume", None, delay=0.3)
    started = client.createVolume(
        name="slow",
        zoneid=sim.zone_id,
        diskofferingid=sim.custom_disk_offering_id,
        size=2,
        fetch_result=False,
    )
    assert set(started) == {"id", "jobid"}
    first = client.queryAsyncJobResult(jobid=started["jobid"], fetch_result=False)
    assert first["jobstatus"] == 0
    assert first["cmd"] == "org.apache.cloudstack.api.command.user.volume.CreateVolumeCmd"
    listed = client.listVolumes(id=started["id"])["volume"][0]
    assert listed["jobid"] == started["jobid"] and listed["jobstatus"] == 0
    result = client._jobresult(jobid=started["jobid"])
    vol = result["volume"]
    assert vol["id"] == started["id"]
    assert vol["state"] == "Allocated" and vol["size"] == 2 * GIB and "jobid" not in vol
    backing = sim.state_dir / "volumes" / f"{vol['id']}.img"
    assert backing.stat().st_size == 2 * GIB
    assert backing.stat().st_blocks == 0  # sparse
    done = client.queryAsyncJobResult(jobid=started["jobid"], fetch_result=False)
    assert done["jobstatus"] == 1 and done["jobresultcode"] == 0
    assert done["jobresulttype"] == "object"


def test_missing_and_invalid_parameters_are_431(sim, client) -> None:
    vol = _create(client, sim)
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.attachVolume(id=vol["id"])
    assert exc.value.response.status_code == 431
    assert exc.value.error["cserrorcode"] == 4350
    assert exc.value.error["errortext"] == (
        "Unable to execute API command attachvolume due to missing parameter virtualmachineid"
    )
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.createVolume(
            name="x", zoneid="no-such-zone", diskofferingid=sim.custom_disk_offering_id, size=1
        )
    assert "Invalid parameter zoneid value=no-such-zone" in exc.value.error["errortext"]
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.createVolume(
            name="x", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id
        )
    assert exc.value.error["errorcode"] == 431


def test_attach_to_oma_creates_by_id_link_and_detach_removes_it(sim, client) -> None:
    vol = _create(client, sim)
    link = sim.by_id_dir / f"virtio-{device_serial(vol['id'])}"
    assert len(device_serial(vol["id"])) == 20 and "-" not in device_serial(vol["id"])
    assert not link.exists()
    attached = client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)["volume"]
    assert attached["state"] == "Ready"
    assert attached["virtualmachineid"] == sim.oma_vm_id and attached["deviceid"] == 1
    assert link.is_symlink()
    assert os.path.realpath(link) == str(sim.state_dir / "volumes" / f"{vol['id']}.img")
    with open(link, "r+b") as fh:  # the "device" is writable
        fh.write(b"hello")
    detached = client.detachVolume(id=vol["id"])["volume"]
    assert "virtualmachineid" not in detached and detached["state"] == "Ready"
    assert not link.exists()
    assert client.deleteVolume(id=vol["id"]) == {"success": True}
    assert not (sim.state_dir / "volumes" / f"{vol['id']}.img").exists()
    assert client.listVolumes(name="data") == {}


def test_delete_attached_volume_is_refused(sim, client) -> None:
    vol = _create(client, sim)
    client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.deleteVolume(id=vol["id"])
    assert exc.value.response.status_code == 431
    assert exc.value.error["errortext"] == (
        "Please specify a volume that is not attached to any VM."
    )


def test_duplicate_device_id_fails_the_job(sim, client) -> None:
    a, b = _create(client, sim, "a"), _create(client, sim, "b")
    client.attachVolume(id=a["id"], virtualmachineid=sim.oma_vm_id, deviceid=2)
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.attachVolume(id=b["id"], virtualmachineid=sim.oma_vm_id, deviceid=2)
    assert exc.value.args[0] == "Job failure"
    # VolumeApiServiceImpl.getDeviceId throws a RuntimeException: 530, the VM's internal id
    assert exc.value.error == {"errorcode": 530, "errortext": "deviceId 2 is used by vm 101"}
    # orchestrateAttachVolumeToVM created it on primary storage before the device id failed
    assert client.listVolumes(id=b["id"])["volume"][0]["state"] == "Ready"
    # without a device id the next free one is taken
    assert (
        client.attachVolume(id=b["id"], virtualmachineid=sim.oma_vm_id)["volume"]["deviceid"] == 1
    )


def test_attach_twice_is_refused(sim, client) -> None:
    vol = _create(client, sim)
    client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
    assert exc.value.error["errortext"] == (
        "Please specify a volume that is not attached to any VM."
    )


def test_injected_attach_fault_fails_job_once(sim, client) -> None:
    vol = _create(client, sim)
    inject_fault(sim, "attachVolume", 530, errortext="Failed to attach volume data")
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
    assert exc.value.error == {"errorcode": 530, "errortext": "Failed to attach volume data"}
    assert exc.value.response.status_code == 200
    assert not any(sim.by_id_dir.iterdir())
    # once: the retry works
    assert (
        client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)["volume"]["state"]
        == "Ready"
    )


def test_injected_create_fault_leaves_no_volume(sim, client) -> None:
    inject_fault(sim, "createVolume", 530)
    with pytest.raises(cs.CloudStackApiException) as exc:
        _create(client, sim)
    assert exc.value.error["errorcode"] == 530
    assert client.listVolumes(type="DATADISK") == {}
    assert list((sim.state_dir / "volumes").glob("*.img")) and all(
        p.name != "" for p in (sim.state_dir / "volumes").iterdir()
    )
    assert len(list((sim.state_dir / "volumes").iterdir())) == 1  # the OMA's ROOT only


def test_sync_fault_is_an_http_error(sim, client) -> None:
    inject_fault(sim, "listVolumes", 530)
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.listVolumes()
    assert exc.value.response.status_code == 530
    assert client.listVolumes(type="ROOT")["count"] == 1


def test_paging_through_fetch_list(sim, client) -> None:
    for i in range(5):
        client.createVolume(
            name=f"v{i}", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
        )
    page = client.listVolumes(type="DATADISK", page=2, pagesize=2)
    assert page["count"] == 5 and len(page["volume"]) == 2
    assert len(client.listVolumes(type="DATADISK", fetch_list=True)) == 5
