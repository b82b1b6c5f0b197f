"""VSphereClient against a real vcsim (tools/vcsim, patched): discovery, create_vm, power,
snapshots, CBT change IDs and changed areas."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from labtest.vcsim import VcsimInfo, vcsim
from vma.errors import (
    ChangeIdError,
    PowerOffError,
    SnapshotNotFoundError,
    VmNotFoundError,
    VmwareError,
)
from vma.vmware import VSphereClient, properties

pytestmark = pytest.mark.slow

MiB = 1 << 20
#: Small QueryChangedDiskAreas windows so a 64 MiB disk needs 16 pages.
WINDOW = 4 * MiB
CHANGE_ID = re.compile(r"^52( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7}/\d+$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimInfo]:
    with vcsim(
        tmp_path_factory.mktemp("vcsim"), extra_env={"VCSIM_CBT_WINDOW_BYTES": str(WINDOW)}
    ) as info:
        yield info


@pytest.fixture
def client(sim: VcsimInfo) -> Iterator[VSphereClient]:
    with VSphereClient(sim.host, sim.username, sim.password, port=sim.port, insecure=True) as c:
        yield c


@pytest.fixture
def raw(sim: VcsimInfo) -> Iterator[vim.ServiceInstance]:
    """An independent pyVmomi session, to check and to arrange what the client cannot."""
    si = SmartConnect(
        host=sim.host,
        port=sim.port,
        user=sim.username,
        pwd=sim.password,
        disableSslCertValidation=True,
    )
    yield si
    Disconnect(si)


def _raw_vm(si: vim.ServiceInstance, vm_id: str) -> vim.VirtualMachine:
    vm = si.content.searchIndex.FindByUuid(uuid=vm_id, vmSearch=True, instanceUuid=False)
    assert vm is not None
    return vm


def _reconfigure(si: vim.ServiceInstance, vm_id: str, **spec: object) -> None:
    assert WaitForTask(_raw_vm(si, vm_id).ReconfigVM_Task(vim.vm.ConfigSpec(**spec))) == "success"


def _new_vm(client: VSphereClient, name: str, sizes: list[int] | None = None) -> dict:
    return client.create_vm(
        name, disks_bytes=sizes or [64 * MiB, 32 * MiB], networks=["VM Network"]
    )


# -- discovery ---------------------------------------------------------------------------------


def test_discover_lists_the_simulator_vms_with_disks_and_nics(
    client: VSphereClient, raw: vim.ServiceInstance
) -> None:
    vms = {vm["name"]: vm for vm in client.discover()}
    for name in ("DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"):
        assert name in vms
        vm = vms[name]
        assert UUID.match(vm["id"])
        assert vm["path"] == f"/DC0/vm/{name}"
        assert vm["power_state"] in ("poweredOn", "poweredOff", "suspended")
        assert vm["cpus"] >= 1 and vm["memory_mb"] >= 1
        assert vm["firmware"] == "bios" and vm["secure_boot"] is False
        assert vm["disks"], name
        for disk in vm["disks"]:
            assert disk["key"].isdigit()
            assert disk["capacity_bytes"] == 1 * MiB  # vcsim model disks
            assert disk["datastore"] == "LocalDS_0"
            assert disk["vmdk_path"].startswith("[LocalDS_0] ")
            assert disk["provisioning"] in ("thin", "thick_lazy_zeroed", "thick_eager_zeroed")
            assert isinstance(disk["controller_key"], int) and isinstance(disk["unit_number"], int)
        assert vm["nics"], name
        for nic in vm["nics"]:
            assert re.match(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$", nic["mac"])
            assert nic["network"] in ("VM Network", "DC0_DVPG0")
            assert nic["adapter_type"] in ("e1000", "e1000e", "vmxnet3")
    # the same VMs an independent pyVmomi read sees, by uuid
    for vm in vms.values():
        ref = _raw_vm(raw, vm["id"])
        assert ref.name == vm["name"]
        assert vm["moref"] == ref._moId
        assert [
            str(d.key)
            for d in ref.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualDisk)
        ] == [d["key"] for d in vm["disks"]]
    assert len({vm["id"] for vm in vms.values()}) == len(vms)


def test_discover_limited_to_a_datacenter(sim: VcsimInfo, client: VSphereClient) -> None:
    everything = client.discover()
    with VSphereClient(
        sim.host, sim.username, sim.password, port=sim.port, insecure=True, datacenter="DC0"
    ) as dc0:
        assert [v["id"] for v in dc0.discover()] == [v["id"] for v in everything]
    with (
        VSphereClient(
            sim.host, sim.username, sim.password, port=sim.port, insecure=True, datacenter="DC9"
        ) as missing,
        pytest.raises(VmwareError, match="datacenter 'DC9' not found"),
    ):
        missing.discover()


def test_discovery_pages_through_the_property_collector(
    client: VSphereClient, raw: vim.ServiceInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = client.discover()
    # the simulator really pages: one object per answer plus a token
    pc = vmodl.query.PropertyCollector
    view = raw.content.viewManager.CreateContainerView(
        raw.content.rootFolder, [vim.VirtualMachine], True
    )
    spec = pc.FilterSpec(
        objectSet=[
            pc.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[pc.TraversalSpec(name="v", type=vim.view.ContainerView, path="view")],
            )
        ],
        propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])],
    )
    first = raw.content.propertyCollector.RetrievePropertiesEx(
        [spec], pc.RetrieveOptions(maxObjects=1)
    )
    view.Destroy()
    assert len(first.objects) == 1 and first.token
    raw.content.propertyCollector.CancelRetrievePropertiesEx(first.token)

    monkeypatch.setattr(properties, "PAGE_SIZE", 1)
    assert client.discover() == everything


def test_discover_includes_vms_in_vapps(tmp_path: Path) -> None:
    with (
        vcsim(tmp_path, vms_per_host=1, vapps_per_cluster=2) as sim2,
        VSphereClient(sim2.host, sim2.username, sim2.password, port=sim2.port,
                      ca_file=sim2.ca_file) as client,
    ):  # fmt: skip
        names = {vm["name"]: vm for vm in client.discover()}
    assert {"DC0_C0_APP0_VM0", "DC0_C0_APP1_VM0", "DC0_C0_RP0_VM0", "DC0_H0_VM0"} <= set(names)
    assert names["DC0_C0_APP1_VM0"]["path"] == "/DC0/vm/DC0_C0_APP1_VM0"
    assert names["DC0_C0_APP1_VM0"]["disks"]


def test_discover_520_vms_in_two_pages(tmp_path: Path) -> None:
    with (
        vcsim(tmp_path, vms_per_host=260, timeout=120) as big,
        VSphereClient(big.host, big.username, big.password, port=big.port,
                      ca_file=big.ca_file) as client,
    ):  # fmt: skip
        vms = client.discover()
        assert len(vms) == 520 > properties.PAGE_SIZE
        assert len({vm["id"] for vm in vms}) == 520
        assert all(vm["disks"] and vm["nics"] for vm in vms)
        assert client.get_vm(vms[-1]["id"]) == vms[-1]


def test_get_vm_matches_discovery(client: VSphereClient) -> None:
    for vm in client.discover():
        assert client.get_vm(vm["id"]) == vm


def test_unknown_vm_raises_vm_not_found(client: VSphereClient) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for call in (
        lambda: client.get_vm(missing),
        lambda: client.power_state(missing),
        lambda: client.cbt_status(missing),
        lambda: client.create_snapshot(missing, "x"),
    ):
        with pytest.raises(VmNotFoundError) as err:
            call()
        assert err.value.vm_id == missing
        assert missing in str(err.value)


# -- create_vm ---------------------------------------------------------------------------------


def test_create_vm_with_two_disks(client: VSphereClient) -> None:
    vm = client.create_vm(
        "create-two-disks",
        disks_bytes=[64 * MiB, 32 * MiB],
        cpus=4,
        memory_mb=1024,
        firmware="efi",
        networks=["VM Network", "DC0_DVPG0"],
    )
    assert vm["name"] == "create-two-disks"
    assert vm["path"] == "/DC0/vm/create-two-disks"
    assert vm["power_state"] == "poweredOff"
    assert (vm["cpus"], vm["memory_mb"], vm["firmware"]) == (4, 1024, "efi")
    assert vm["guest_os"] == "otherLinux64Guest"
    assert [d["capacity_bytes"] for d in vm["disks"]] == [64 * MiB, 32 * MiB]
    keys = [d["key"] for d in vm["disks"]]
    assert len(set(keys)) == 2 and all(k.isdigit() for k in keys)
    assert {d["controller_key"] for d in vm["disks"]} == {vm["disks"][0]["controller_key"]}
    assert [d["unit_number"] for d in vm["disks"]] == [0, 1]
    assert all(d["provisioning"] == "thin" and d["datastore"] == "LocalDS_0" for d in vm["disks"])
    assert [(n["network"], n["adapter_type"]) for n in vm["nics"]] == [
        ("VM Network", "vmxnet3"),
        ("DC0_DVPG0", "vmxnet3"),
    ]
    assert client.get_vm(vm["id"]) == vm
    assert vm["id"] in {v["id"] for v in client.discover()}


def test_create_vm_rejects_unknown_network_and_bad_sizes(client: VSphereClient) -> None:
    with pytest.raises(VmwareError, match="network 'No Such Net' not found"):
        client.create_vm("bad-net", disks_bytes=[MiB], networks=["No Such Net"])
    with pytest.raises(ValueError, match="disks_bytes"):
        client.create_vm("bad-size", disks_bytes=[0])
    assert "bad-net" not in {v["name"] for v in client.discover()}


# -- power -------------------------------------------------------------------------------------


def test_power_off_without_tools_falls_back_to_forced(client: VSphereClient) -> None:
    vm_id = _new_vm(client, "power-no-tools")["id"]
    client.power_on(vm_id)
    client.power_on(vm_id)  # idempotent
    assert client.power_state(vm_id) == "poweredOn"
    result = client.power_off(vm_id, timeout_s=30)
    assert result["method"] == "forced"
    assert "ToolsUnavailable" in result["reason"]
    assert client.power_state(vm_id) == "poweredOff"
    assert client.power_off(vm_id) == {"method": "already_off", "seconds": 0.0}


def test_power_off_graceful_when_tools_run(client: VSphereClient, raw: vim.ServiceInstance) -> None:
    vm_id = _new_vm(client, "power-tools")["id"]
    _reconfigure(
        raw,
        vm_id,
        extraConfig=[
            vim.option.OptionValue(key="SET.guest.toolsRunningStatus", value="guestToolsRunning")
        ],
    )
    client.power_on(vm_id)
    result = client.power_off(vm_id, timeout_s=30)
    assert result["method"] == "graceful"
    assert "reason" not in result
    assert client.get_vm(vm_id)["power_state"] == "poweredOff"


def test_power_off_guest_ignoring_shutdown(client: VSphereClient, raw: vim.ServiceInstance) -> None:
    vm_id = _new_vm(client, "power-stubborn")["id"]
    _reconfigure(
        raw,
        vm_id,
        extraConfig=[
            vim.option.OptionValue(key="SET.guest.toolsRunningStatus", value="guestToolsRunning"),
            vim.option.OptionValue(key="ossea.shutdownGuest", value="ignore"),
        ],
    )
    client.power_on(vm_id)
    with pytest.raises(PowerOffError, match="still running"):
        client.power_off(vm_id, timeout_s=0.3, poll_s=0.05, force_after_timeout=False)
    assert client.power_state(vm_id) == "poweredOn"  # untouched when forcing is not allowed
    result = client.power_off(vm_id, timeout_s=0.3, poll_s=0.05)
    assert result["method"] == "forced"
    assert "still running" in result["reason"]
    assert result["seconds"] >= 0.3
    assert client.power_state(vm_id) == "poweredOff"


def test_power_off_not_graceful_forces_at_once(client: VSphereClient) -> None:
    vm_id = _new_vm(client, "power-hard")["id"]
    client.power_on(vm_id)
    result = client.power_off(vm_id, graceful=False)
    assert result["method"] == "forced" and "reason" not in result
    assert client.power_state(vm_id) == "poweredOff"


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshot_create_remove_and_sweep(client: VSphereClient) -> None:
    vm_id = _new_vm(client, "snapshots")["id"]
    assert client.list_snapshots(vm_id) == []
    old1 = client.create_snapshot(vm_id, "ossea-migrate-old1", "left over")
    foreign = client.create_snapshot(vm_id, "backup-nightly")
    old2 = client.create_snapshot(vm_id, "ossea-migrate-old2")
    current = client.create_snapshot(vm_id, "ossea-migrate-job1")
    listed = client.list_snapshots(vm_id)
    assert [s["id"] for s in listed] == [old1, foreign, old2, current]
    assert listed[0]["name"] == "ossea-migrate-old1"
    assert listed[0]["description"] == "left over"
    assert all(s["id"].startswith("snapshot-") for s in listed)

    removed = client.sweep_snapshots(vm_id, "ossea-migrate-", keep=current)
    assert sorted(removed) == sorted([old1, old2])
    assert [s["id"] for s in client.list_snapshots(vm_id)] == [foreign, current]
    assert client.sweep_snapshots(vm_id, "ossea-migrate-", keep=current) == []

    client.remove_snapshot(vm_id, current)
    assert [s["id"] for s in client.list_snapshots(vm_id)] == [foreign]
    with pytest.raises(SnapshotNotFoundError, match=current):
        client.remove_snapshot(vm_id, current)
    client.remove_snapshot(vm_id, foreign)
    assert client.list_snapshots(vm_id) == []
    assert client.get_vm(vm_id)["disks"]  # the VM is intact


# -- CBT ---------------------------------------------------------------------------------------


def test_cbt_enable_and_status(client: VSphereClient) -> None:
    vm_id = _new_vm(client, "cbt-enable")["id"]
    assert client.cbt_status(vm_id) == {"enabled": False, "supported": True}
    assert client.get_vm(vm_id)["cbt_enabled"] is False
    assert client.enable_cbt(vm_id) == {"enabled": True, "supported": True}
    assert client.enable_cbt(vm_id) == {"enabled": True, "supported": True}  # idempotent
    assert client.get_vm(vm_id)["cbt_enabled"] is True


def test_disk_change_ids_and_changed_areas(client: VSphereClient) -> None:
    vm = _new_vm(client, "cbt-areas")
    vm_id = vm["id"]
    keys = [d["key"] for d in vm["disks"]]
    before = client.create_snapshot(vm_id, "before-cbt")
    assert client.disk_change_ids(vm_id, before) == {k: None for k in keys}

    client.enable_cbt(vm_id)
    first = client.create_snapshot(vm_id, "ossea-1")
    ids1 = client.disk_change_ids(vm_id, first)
    assert sorted(ids1) == sorted(keys)
    assert all(CHANGE_ID.match(v) for v in ids1.values()), ids1
    second = client.create_snapshot(vm_id, "ossea-2")
    ids2 = client.disk_change_ids(vm_id, second)
    for k in keys:  # same tracking generation, later sequence number
        assert ids2[k].split("/")[0] == ids1[k].split("/")[0]
        assert int(ids2[k].split("/")[1]) > int(ids1[k].split("/")[1])

    big, small = keys
    # the 64 MiB disk spans 16 windows of 4 MiB: only paging to the end yields the whole disk
    assert client.query_changed_areas(vm_id, second, big, "*") == [(0, 64 * MiB)]
    assert client.query_changed_areas(vm_id, second, small, ids1[small]) == [(0, 32 * MiB)]
    assert client.query_changed_areas(vm_id, second, big, ids2[big]) == []

    with pytest.raises(VmwareError, match="disk 999 is not in snapshot"):
        client.query_changed_areas(vm_id, second, "999", "*")
    with pytest.raises(ChangeIdError, match="another CBT generation"):
        client.query_changed_areas(vm_id, second, big, "not-a-change-id")
    with pytest.raises(ChangeIdError, match="CBT off in snapshot"):
        client.query_changed_areas(vm_id, before, big, ids1[big])
    assert client.query_changed_areas(vm_id, before, big, "*") == [(0, 64 * MiB)]
    with pytest.raises(SnapshotNotFoundError):
        client.disk_change_ids(vm_id, "snapshot-999999")


def test_cbt_reset_invalidates_old_change_ids(
    client: VSphereClient, raw: vim.ServiceInstance
) -> None:
    vm = _new_vm(client, "cbt-reset", sizes=[8 * MiB])
    vm_id, key = vm["id"], vm["disks"][0]["key"]
    client.enable_cbt(vm_id)
    old = client.disk_change_ids(vm_id, client.create_snapshot(vm_id, "ossea-a"))[key]
    _reconfigure(raw, vm_id, changeTrackingEnabled=False)
    client.create_snapshot(vm_id, "off")  # vSphere applies the change at a stun/unstun
    client.enable_cbt(vm_id)
    snap = client.create_snapshot(vm_id, "ossea-b")
    new = client.disk_change_ids(vm_id, snap)[key]
    assert new.split("/")[0] != old.split("/")[0]
    with pytest.raises(ChangeIdError, match="CBT was reset"):
        client.query_changed_areas(vm_id, snap, key, old)
    assert client.query_changed_areas(vm_id, snap, key, "*") == [(0, 8 * MiB)]
