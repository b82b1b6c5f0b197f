"""deployVirtualMachine/destroyVirtualMachine/listVirtualMachines rules of UserVmManagerImpl,
DeployVMCmd and QueryManagerImpl, with an admin key (default) and a user key."""

from __future__ import annotations

import cs
import pytest

from labtest.cloudstack import cloudstack_sim, set_settings

from .conftest import make_client


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


def _error(call, *args, **kw) -> dict:
    with pytest.raises(cs.CloudStackApiException) as exc:
        call(*args, **kw)
    return exc.value.error


@pytest.fixture
def user_sim(tmp_path):
    with cloudstack_sim(tmp_path, settings={"sim.account.type": "user"}) as info:
        yield info


def test_fixed_cpu_speed_is_not_customizable(sim, client) -> None:
    fixed = sim.service_offering_ids["Custom fixed speed"]
    err = _error(
        _deploy,
        client,
        sim,
        serviceofferingid=fixed,
        details={"cpuNumber": 2, "cpuSpeed": 1000, "memory": 2048},
    )
    assert err["errorcode"] == 431
    assert err["errortext"] == (
        f"The cpu speed of this offering id:{fixed} is not customizable. "
        "This is predefined in the template."
    )
    vm = _deploy(client, sim, serviceofferingid=fixed, details={"cpuNumber": 2, "memory": 2048})
    assert (vm["cpunumber"], vm["cpuspeed"], vm["memory"]) == (2, 2000, 2048)


def test_custom_offering_needs_every_value(sim, client) -> None:
    custom = sim.custom_service_offering_id
    err = _error(_deploy, client, sim, serviceofferingid=custom)
    assert err["errortext"] == (
        "Need to specify custom parameter values cpu, cpu speed and memory "
        "when using custom offering"
    )
    err = _error(
        _deploy, client, sim, serviceofferingid=custom, details={"cpuSpeed": 1000, "memory": 64}
    )
    assert err["errortext"] == ("Invalid cpu cores value, specify a value between 1 and 2147483647")
    err = _error(
        _deploy,
        client,
        sim,
        serviceofferingid=custom,
        details={"cpuNumber": 1, "cpuSpeed": 1000, "memory": 16},
    )
    assert err["errortext"] == "Invalid memory value, specify a value between 32 and 2147483647"


def test_name_must_be_a_host_name(sim, client) -> None:
    for bad in ("mig_vm", "1vm", "vm-", "-vm", "a" * 64):
        err = _error(_deploy, client, sim, name=bad)
        assert err["errorcode"] == 431
        assert err["errortext"].startswith("Invalid name. Vm name can contain ASCII letters")
    assert _deploy(client, sim, name="Mig-VM-01")["name"] == "Mig-VM-01"


def test_destroyed_vm_name_still_blocks_its_networks(sim, client) -> None:
    vm = _deploy(client, sim)
    client.destroyVirtualMachine(id=vm["id"])
    err = _error(_deploy, client, sim)
    assert err["errortext"] == (
        "The vm with hostName vm1 already exists in the network domain: cs2cloud.internal; "
        "network=guest-net"
    )
    other_net = sim.network_ids["guest-net-2"]
    assert _deploy(client, sim, networkids=[other_net])["nic"][0]["networkid"] == other_net
    client.destroyVirtualMachine(id=vm["id"], expunge=True)  # expunged: the name is free
    assert _deploy(client, sim)["name"] == "vm1"


def test_boot_type_and_mode(sim, client) -> None:
    vm = _deploy(client, sim)
    assert (vm["boottype"], vm["bootmode"]) == ("Bios", "legacy")
    uefi = _deploy(client, sim, name="vm2", boottype="UEFI", bootmode="SECURE")
    assert (uefi["boottype"], uefi["bootmode"]) == ("Uefi", "secure")
    listed = client.listVirtualMachines(id=uefi["id"])["virtualmachine"][0]
    assert listed["boottype"] == "Uefi" and listed["details"]["UEFI"] == "SECURE"
    err = _error(_deploy, client, sim, name="vm3", boottype="UEFI")
    assert err["errortext"] == (
        "bootmode must be specified for the Instance with boot type: UEFI. "
        "Valid values are: [LEGACY, SECURE]"
    )
    err = _error(_deploy, client, sim, name="vm3", boottype="EFI")
    assert err["errortext"] == (
        "Invalid bootType EFISpecified for Instance vm3 Valid values are: [BIOS, UEFI]"
    )
    err = _error(_deploy, client, sim, name="vm3", boottype="UEFI", bootmode="FAST")
    assert err["errortext"] == (
        "Invalid bootmode: FAST specified for Instance: vm3. Valid values are: [LEGACY, SECURE]"
    )


def test_admin_sees_destroyed_vms_and_name_matches_exactly(sim, client) -> None:
    vm = _deploy(client, sim)
    _deploy(client, sim, name="vm10")
    assert client.destroyVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Destroyed"
    # destroying again is a no-op
    assert client.destroyVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Destroyed"
    listed = client.listVirtualMachines(name="vm1")["virtualmachine"]
    assert [(v["name"], v["state"]) for v in listed] == [("vm1", "Destroyed")]
    present = client.listVirtualMachines(state="present", fetch_list=True)
    assert {v["name"] for v in present} == {"oma-appliance", "vm10"}


def test_user_key_cannot_expunge_nor_see_destroyed_vms(user_sim) -> None:
    client = make_client(user_sim)
    try:
        vm = _deploy(client, user_sim)
        with pytest.raises(cs.CloudStackApiException) as exc:
            client.destroyVirtualMachine(id=vm["id"], expunge=True)
        assert exc.value.args[0] == "Job failure"
        assert exc.value.error == {
            "errorcode": 531,
            "errortext": "Account does not have permission for expunging.",
        }
        assert client.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"] == "Stopped"
        client.destroyVirtualMachine(id=vm["id"])
        assert client.listVirtualMachines(name="vm1") == {}
        set_settings(user_sim, **{"allow.user.view.destroyed.vm": True})
        assert client.listVirtualMachines(name="vm1")["virtualmachine"][0]["state"] == "Destroyed"
    finally:
        client.session.close()


def test_user_key_expunges_with_the_relaxing_setting(tmp_path) -> None:
    settings = {"sim.account.type": "user", "allow.user.expunge.recover.vm": True}
    with cloudstack_sim(tmp_path, settings=settings) as sim:
        client = make_client(sim)
        try:
            vm = _deploy(client, sim)
            gone = client.destroyVirtualMachine(id=vm["id"], expunge=True)["virtualmachine"]
            assert gone["state"] == "Expunging"
            assert client.listVirtualMachines(name="vm1") == {}
        finally:
            client.session.close()


def test_catalog_templates_os_types_networks(sim, client) -> None:
    assert next(iter(sim.template_ids)) == "rhel8-migrated"
    assert sim.template_ids["rhel8-migrated"] == sim.template_id
    templates = client.listTemplates(templatefilter="executable", fetch_list=True)
    by_name = {t["name"]: t for t in templates}
    assert by_name["ubuntu-22.04"]["ostypename"] == "Ubuntu 22.04 LTS"
    assert by_name["windows-2019"]["ostypename"] == "Windows Server 2019 (64-bit)"
    os_types = {o["description"]: o for o in client.listOsTypes(fetch_list=True)}
    for tpl in templates:
        assert os_types[tpl["ostypename"]]["id"] == tpl["ostypeid"]
    assert set(os_types["Ubuntu 22.04 LTS"]) >= {"id", "description", "oscategoryid"}
    win = client.listOsTypes(keyword="windows")["ostype"]
    assert {o["description"] for o in win} >= {"Windows Server 2019 (64-bit)"}
    nets = {n["name"]: n["id"] for n in client.listNetworks(fetch_list=True)}
    assert nets == sim.network_ids and set(nets) == {"guest-net", "guest-net-2"}
    offerings = {o["name"] for o in client.listServiceOfferings(fetch_list=True)}
    assert offerings == {"Small", "Medium", "Custom", "Custom fixed speed"}
