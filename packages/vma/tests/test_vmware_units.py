"""Unit tests of the vSphere layer's pure helpers (no simulator needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pyVmomi import vim, vmodl

from vma.errors import VmwareConnectionError, VmwareError
from vma.vmware import cbt
from vma.vmware.faults import fault_text, vsphere_errors
from vma.vmware.inventory import Names


def test_coalesce_sorts_and_merges_touching_and_overlapping_extents() -> None:
    assert cbt.coalesce([(100, 10), (0, 50), (50, 10), (55, 20), (200, 0), (90, 5)]) == [
        (0, 75),
        (90, 5),
        (100, 10),
    ]
    assert cbt.coalesce([]) == []


class _PagingVm:
    """Answers QueryChangedDiskAreas like vCenter: bounded windows, given areas per window."""

    def __init__(self, window: int, length_override: int | None = None) -> None:
        self.window, self.length_override, self.calls = window, length_override, []

    def QueryChangedDiskAreas(self, *, snapshot, deviceKey, startOffset, changeId):
        self.calls.append(startOffset)
        length = self.window if self.length_override is None else self.length_override
        return SimpleNamespace(
            startOffset=startOffset,
            length=length,
            changedArea=[SimpleNamespace(start=startOffset + 10, length=length)],
        )


def _disk(capacity: int) -> SimpleNamespace:
    return SimpleNamespace(
        key=2000,
        capacityInBytes=capacity,
        capacityInKB=capacity // 1024,
        backing=SimpleNamespace(changeId="52 aa/7"),
    )


def test_changed_areas_pages_to_the_end_and_clips_to_the_capacity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cbt, "snapshot_disks", lambda si, snap: {"2000": _disk(1000)})
    vm = _PagingVm(window=300)
    snap = SimpleNamespace(_moId="snapshot-1")
    areas = cbt.changed_areas(None, vm, snap, "2000", "52 aa/1")
    assert vm.calls == [0, 300, 600, 900]
    # windows report [10,310) [310,610) [610,910) [910,1210) → merged and clipped at 1000
    assert areas == [(10, 990)]


def test_changed_areas_refuses_a_window_that_makes_no_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cbt, "snapshot_disks", lambda si, snap: {"2000": _disk(1000)})
    vm = _PagingVm(window=300, length_override=0)
    with pytest.raises(VmwareError, match="no progress at offset 0"):
        cbt.changed_areas(None, vm, SimpleNamespace(_moId="s"), "2000", "*")


def test_generation_is_the_tracking_uuid_of_a_change_id() -> None:
    assert cbt.generation("52 3c ec 11 9e 2c 4c 3d-87 4a c3 4e 85 f2 ea 95/5") == (
        "52 3c ec 11 9e 2c 4c 3d-87 4a c3 4e 85 f2 ea 95"
    )
    assert cbt.generation("*") is None
    assert cbt.generation("garbage") is None
    assert cbt.generation(None) is None


def test_fault_text_names_the_fault_type_message_and_property() -> None:
    assert fault_text(vim.fault.ToolsUnavailable(msg="no tools")) == "ToolsUnavailable: no tools"
    text = fault_text(vmodl.fault.InvalidArgument(invalidProperty="deviceKey"))
    assert text == "InvalidArgument: invalid property deviceKey"
    assert fault_text(ConnectionRefusedError(111, "refused")).startswith("ConnectionRefusedError")


def test_vsphere_errors_translates_at_one_edge() -> None:
    with (
        pytest.raises(VmwareConnectionError, match="refused the login") as err,
        vsphere_errors("discover", where="vc:443"),
    ):
        raise vim.fault.InvalidLogin()
    assert isinstance(err.value.__cause__, vim.fault.InvalidLogin)
    with (
        pytest.raises(VmwareConnectionError, match="unreachable"),
        vsphere_errors("discover", where="vc:443"),
    ):
        raise ConnectionResetError("reset")
    with (
        pytest.raises(VmwareError, match="power on: InvalidPowerState") as err,
        vsphere_errors("power on", vm_id="abc"),
    ):
        raise vim.fault.InvalidPowerState()
    assert err.value.vm_id == "abc"
    # programming errors are not disguised as vCenter errors
    with pytest.raises(KeyError), vsphere_errors("x"):
        raise KeyError("bug")


def test_inventory_paths_walk_parents_and_stop_at_the_root() -> None:
    names = Names(
        name={"group-d1": "Datacenters", "dc1": "DC0", "group-v3": "vm", "f1": "prod"},
        parent={"dc1": "group-d1", "group-v3": "dc1", "f1": "group-v3"},
    )
    del names.name["group-d1"]  # the root folder is not part of the path
    folder = SimpleNamespace(_moId="f1")
    assert names.path_of(folder, "web01") == "/DC0/vm/prod/web01"
    assert names.path_of(None, "orphan") == "/orphan"


def test_boot_order_and_controllers_from_pyvmomi_objects() -> None:
    from vma.vmware.inventory import boot_order, controllers_of

    bo = vim.vm.BootOptions
    entries = [
        bo.BootableCdromDevice(),
        bo.BootableDiskDevice(deviceKey=16000),
        bo.BootableEthernetDevice(deviceKey=4000),
        bo.BootableFloppyDevice(),
    ]
    assert boot_order(entries) == [
        {"type": "cdrom"},
        {"type": "disk", "key": "16000"},
        {"type": "network", "key": "4000"},
        {"type": "floppy"},
    ]
    assert boot_order(None) == []
    dev = vim.vm.device
    devices = [
        dev.VirtualIDEController(key=200, busNumber=0),
        dev.VirtualAHCIController(key=15000, busNumber=0),
        dev.VirtualNVMEController(key=31000, busNumber=1),
        dev.VirtualLsiLogicSASController(key=1001, busNumber=1),
        dev.VirtualUSBController(key=7000, busNumber=0),
    ]
    assert controllers_of(devices) == {
        200: ("ide", 0),
        15000: ("sata", 0),
        31000: ("nvme", 1),
        1001: ("scsi", 1),
    }
