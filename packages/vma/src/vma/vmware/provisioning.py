"""Build the CreateVM_Task arguments for a new VM (the lab's way to make source VMs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from vma.errors import VmwareError
from vma.vmware.properties import retrieve_one, retrieve_view

Dev = vim.vm.device
DevSpec = vim.vm.device.VirtualDeviceSpec


@dataclass(frozen=True)
class Placement:
    """Where a new VM goes: folder, resource pool, datastore name, and the datacenter's networks."""

    folder: Any
    pool: Any
    datastore: str
    networks: dict[str, Any]  # name -> vim.Network / vim.dvs.DistributedVirtualPortgroup


def find_placement(
    si: vim.ServiceInstance, datacenter: Any, datastore: str | None = None
) -> Placement:
    """The datacenter's VM folder, its first resource pool and a datastore (given or first)."""
    dc = retrieve_one(si, datacenter, ["name", "vmFolder", "hostFolder", "datastore"])
    pools = [
        props["resourcePool"]
        for _, props in retrieve_view(si, dc["hostFolder"], {vim.ComputeResource: ["resourcePool"]})
        if props.get("resourcePool") is not None
    ]
    if not pools:
        raise VmwareError(f"datacenter {dc.get('name')!r} has no compute resource")
    ds_names = [
        props["name"]
        for _, props in retrieve_view(si, datacenter, {vim.Datastore: ["name"]})
        if "name" in props
    ]
    if datastore is None:
        if not ds_names:
            raise VmwareError(f"datacenter {dc.get('name')!r} has no datastore")
        datastore = sorted(ds_names)[0]
    elif datastore not in ds_names:
        raise VmwareError(f"datastore {datastore!r} not found in datacenter {dc.get('name')!r}")
    networks = {
        props["name"]: obj
        for obj, props in retrieve_view(si, datacenter, {vim.Network: ["name"]})
        if "name" in props
    }
    return Placement(folder=dc["vmFolder"], pool=pools[0], datastore=datastore, networks=networks)


def _nic_backing(si: vim.ServiceInstance, name: str, network: Any) -> Any:
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        pg = retrieve_one(si, network, ["key", "config.distributedVirtualSwitch"])
        dvs = retrieve_one(si, pg["config.distributedVirtualSwitch"], ["uuid"])
        port = vim.dvs.PortConnection(portgroupKey=pg["key"], switchUuid=dvs["uuid"])
        return Dev.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    return Dev.VirtualEthernetCard.NetworkBackingInfo(deviceName=name, network=network)


def vm_config_spec(
    si: vim.ServiceInstance,
    placement: Placement,
    name: str,
    *,
    disks_bytes: list[int],
    cpus: int,
    memory_mb: int,
    guest_id: str,
    firmware: str,
    networks: list[str],
) -> vim.vm.ConfigSpec:
    """A ConfigSpec: one PVSCSI controller, thin disks of the given sizes, one vmxnet3 NIC per
    network. Sizes are rounded up to whole KiB (vSphere sizes disks in KiB)."""
    if firmware not in ("bios", "efi"):
        raise ValueError(f"firmware must be 'bios' or 'efi', not {firmware!r}")
    if any(not isinstance(b, int) or b <= 0 for b in disks_bytes):
        raise ValueError("disks_bytes must be positive integers")
    if len(disks_bytes) > 15:
        raise ValueError("at most 15 disks fit on one SCSI controller")
    unknown = [n for n in networks if n not in placement.networks]
    if unknown:
        raise VmwareError(f"network {unknown[0]!r} not found")
    ds = f"[{placement.datastore}]"
    controller_key = -100
    changes = [
        DevSpec(
            operation=DevSpec.Operation.add,
            device=Dev.ParaVirtualSCSIController(
                key=controller_key, busNumber=0, sharedBus="noSharing"
            ),
        )
    ]
    unit = 0
    for i, size in enumerate(disks_bytes):
        if unit == 7:  # the controller's own unit
            unit += 1
        kib = (size + 1023) // 1024
        disk = Dev.VirtualDisk(
            key=-(101 + i),
            controllerKey=controller_key,
            unitNumber=unit,
            capacityInKB=kib,
            capacityInBytes=kib * 1024,
            backing=Dev.VirtualDisk.FlatVer2BackingInfo(
                diskMode="persistent", thinProvisioned=True, fileName=ds
            ),
        )
        changes.append(
            DevSpec(operation=DevSpec.Operation.add, fileOperation="create", device=disk)
        )
        unit += 1
    for i, net in enumerate(networks):
        nic = Dev.VirtualVmxnet3(
            key=-(200 + i),
            backing=_nic_backing(si, net, placement.networks[net]),
            addressType="generated",
            connectable=Dev.VirtualDevice.ConnectInfo(
                startConnected=True, allowGuestControl=True, connected=False
            ),
        )
        changes.append(DevSpec(operation=DevSpec.Operation.add, device=nic))
    return vim.vm.ConfigSpec(
        name=name,
        guestId=guest_id,
        numCPUs=cpus,
        memoryMB=memory_mb,
        firmware=firmware,
        files=vim.vm.FileInfo(vmPathName=ds),
        deviceChange=changes,
    )
