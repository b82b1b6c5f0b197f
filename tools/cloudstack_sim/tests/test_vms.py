"""VMs, catalog, persistence and the admin endpoint, through the real ``cs`` client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import cs
import pytest

from labtest.cloudstack import clear_faults, cloudstack_sim, inject_fault, list_faults

from .conftest import make_client

ROOT_STOPPED = "Root volume detach can happen only when vm is in states: Stopped or Destroyed"


def _deploy(client, sim, **kw):
    params = {
        "name": "mig-vm-01",
        "zoneid": sim.zone_id,
        "serviceofferingid": sim.service_offering_id,
        "templateid": sim.template_id,
        "networkids": [sim.network_id],
        "startvm": False,
        **kw,
    }
    return client.deployVirtualMachine(**params)["virtualmachine"]


def test_catalog(sim, client) -> None:
    offerings = client.listServiceOfferings(fetch_list=True)
    assert {o["name"] for o in offerings} >= {"Small", "Medium", "Custom"}
    disk = client.listDiskOfferings(id=sim.custom_disk_offering_id)["diskoffering"][0]
    assert disk["iscustomized"] is True and disk["disksize"] == 0
    assert client.listNetworks(zoneid=sim.zone_id)["network"][0]["id"] == sim.network_id
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.listTemplates()
    assert exc.value.error["errortext"].endswith("missing parameter templatefilter")
    tpl = client.listTemplates(templatefilter="executable")["template"][0]
    assert tpl["id"] == sim.template_id and tpl["isready"] is True


def test_deploy_stopped_with_mac_then_start_stop_destroy(sim, client) -> None:
    vm = _deploy(
        client,
        sim,
        networkids=None,
        iptonetworklist=[{"networkid": sim.network_id, "mac": "02:AA:BB:CC:DD:01"}],
    )
    assert vm["state"] == "Stopped" and "hostid" not in vm
    assert vm["nic"][0]["macaddress"] == "02:aa:bb:cc:dd:01"
    assert vm["nic"][0]["networkid"] == sim.network_id and vm["nic"][0]["isdefault"]
    root = client.listVolumes(virtualmachineid=vm["id"])["volume"]
    # startvm=false: the ROOT volume stays Allocated (no storage pool) until the first start
    assert [(v["type"], v["deviceid"], v["state"]) for v in root] == [("ROOT", 0, "Allocated")]
    assert "storageid" not in root[0]
    assert client.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
    assert client.listVolumes(id=root[0]["id"])["volume"][0]["state"] == "Ready"
    # ROOT detach refused while running
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.detachVolume(id=root[0]["id"])
    assert exc.value.error["errorcode"] == 431
    assert exc.value.error["errortext"] == ROOT_STOPPED
    assert (
        client.stopVirtualMachine(id=vm["id"], forced=True)["virtualmachine"]["state"] == "Stopped"
    )
    gone = client.destroyVirtualMachine(id=vm["id"], expunge=True)["virtualmachine"]
    assert gone["state"] == "Expunging"
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.listVirtualMachines(id=vm["id"])
    assert exc.value.response.status_code == 431
    assert client.listVolumes(type="ROOT", fetch_list=True)[0]["virtualmachineid"] == (
        sim.oma_vm_id
    )


def test_custom_offering_needs_details(sim, client) -> None:
    with pytest.raises(cs.CloudStackApiException) as exc:
        _deploy(client, sim, serviceofferingid=sim.custom_service_offering_id)
    assert exc.value.response.status_code == 431
    vm = _deploy(
        client,
        sim,
        serviceofferingid=sim.custom_service_offering_id,
        details={"cpuNumber": 4, "cpuSpeed": 2000, "memory": 8192},
    )
    assert (vm["cpunumber"], vm["cpuspeed"], vm["memory"]) == (4, 2000, 8192)


def test_network_ids_and_iptonetworklist_are_exclusive(sim, client) -> None:
    with pytest.raises(cs.CloudStackApiException) as exc:
        _deploy(client, sim, iptonetworklist=[{"networkid": sim.network_id}])
    assert "networkids" in exc.value.error["errortext"]


def test_attach_to_destroyed_vm_is_refused_and_data_survives_expunge(sim, client) -> None:
    vm = _deploy(client, sim)
    vol = client.createVolume(
        name="d", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
    )["volume"]
    other = client.createVolume(
        name="e", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
    )["volume"]
    client.attachVolume(id=vol["id"], virtualmachineid=vm["id"])
    assert not any(sim.by_id_dir.iterdir())  # not the OMA: no by-id entry
    client.destroyVirtualMachine(id=vm["id"])
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.attachVolume(id=other["id"], virtualmachineid=vm["id"])
    assert exc.value.error["errortext"] == (
        "Please specify a VM that is either running or stopped."
    )
    client.destroyVirtualMachine(id=vm["id"], expunge=True)
    kept = client.listVolumes(id=vol["id"])["volume"][0]
    assert "virtualmachineid" not in kept
    assert (sim.state_dir / "volumes" / f"{vol['id']}.img").exists()


def test_async_jobs_listed(sim, client) -> None:
    _deploy(client, sim)
    jobs = client.listAsyncJobs()["asyncjobs"]
    assert jobs[0]["cmd"].endswith("DeployVMCmd") and jobs[0]["jobstatus"] == 1


def test_state_survives_restart(tmp_path) -> None:
    with cloudstack_sim(tmp_path) as sim:
        client = make_client(sim)
        vol = client.createVolume(
            name="keep", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
        )["volume"]
        client.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)
        client.session.close()
        first = (sim.api_key, sim.zone_id, sim.oma_vm_id)
    links = list((tmp_path / "by-id").iterdir())
    assert len(links) == 1
    links[0].unlink()  # e.g. the OMA rebooted: the sim recreates entries at start
    with cloudstack_sim(tmp_path) as sim:
        assert (sim.api_key, sim.zone_id, sim.oma_vm_id) == first
        client = make_client(sim)
        again = client.listVolumes(id=vol["id"])["volume"][0]
        client.session.close()
        assert again["virtualmachineid"] == sim.oma_vm_id and again["state"] == "Ready"
        assert [p.name for p in sim.by_id_dir.iterdir()] == [links[0].name]
    assert (tmp_path / "state" / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_faults_from_environment(tmp_path) -> None:
    with cloudstack_sim(tmp_path, faults="listZones:533:once") as sim:
        client = make_client(sim)
        try:
            with pytest.raises(cs.CloudStackApiException) as exc:
                client.listZones()
            assert exc.value.response.status_code == 533
            assert client.listZones()["count"] == 1
        finally:
            client.session.close()


def test_admin_endpoint_validates_and_lists(sim) -> None:
    req = urllib.request.Request(
        f"{sim.admin_url}/faults",
        method="POST",
        data=json.dumps({"command": "x", "errorcode": "bad"}).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    body = json.loads(exc.value.read())
    exc.value.close()
    assert exc.value.code == 400 and body["error"]["field"] == "errorcode"
    inject_fault(sim, "attachVolume", 530, once=False)
    assert list_faults(sim)[0]["command"] == "attachVolume"
    clear_faults(sim)
    assert list_faults(sim) == []


def test_migrated_disk_replaces_root_volume(sim, client) -> None:
    vm = _deploy(client, sim)
    root = client.listVolumes(virtualmachineid=vm["id"])["volume"][0]
    boot = client.createVolume(
        name="boot", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
    )["volume"]
    with pytest.raises(cs.CloudStackApiException) as exc:  # device 0 taken
        client.attachVolume(id=boot["id"], virtualmachineid=vm["id"], deviceid=0)
    assert exc.value.error["errortext"] == "Vm already has root volume attached to it"
    client.detachVolume(id=root["id"])  # allowed: the VM is stopped
    client.deleteVolume(id=root["id"])
    attached = client.attachVolume(id=boot["id"], virtualmachineid=vm["id"], deviceid=0)
    assert (attached["volume"]["type"], attached["volume"]["deviceid"]) == ("ROOT", 0)
    assert client.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
    with pytest.raises(cs.CloudStackApiException) as exc:
        client.detachVolume(id=boot["id"])
    assert exc.value.error["errortext"] == ROOT_STOPPED
