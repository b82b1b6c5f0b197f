"""Read the VM inventory in bulk and turn it into the VMA's VM dicts.

A VM dict (discovery and ``get_vm``; disk keys are strings)::

    {"id": "<config.uuid>", "name": "...", "path": "/DC0/vm/...", "power_state": "poweredOn",
     "host": "esxi-01.lab",
     "guest_os": "rhel8_64Guest", "guest_full_name": "Red Hat Enterprise Linux 8 (64-bit)",
     "cpus": 2, "memory_mb": 2048, "firmware": "bios", "secure_boot": false,
     "cbt_enabled": false, "boot_order": [{"type": "disk", "key": "2000"}],
     "disks": [{"key": "2000", "label": "Hard disk 1", "capacity_bytes": 1073741824,
                "datastore": "LocalDS_0", "vmdk_path": "[LocalDS_0] vm/vm.vmdk",
                "provisioning": "thin", "controller_key": 1000, "controller_type": "scsi",
                "controller_bus": 0, "unit_number": 0}],
     "nics": [{"key": "4000", "label": "Network adapter 1", "network": "VM Network",
               "mac": "00:50:56:..", "adapter_type": "vmxnet3"}]}

``host`` is the name of the ESXi host the VM runs on (``runtime.host``; None when vCenter
does not say). ``boot_order`` is vSphere's ``config.bootOptions.bootOrder`` (empty: the
firmware's default order), each entry ``{"type": "disk"|"network"|"cdrom"|"floppy"}`` plus
the device ``key`` of a disk or NIC. ``controller_type`` is ``ide``/``sata``/``nvme``/``scsi``
(None for another controller), ``controller_bus`` its bus number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim

from vma.errors import VmwareError
from vma.vmware.properties import retrieve_objects, retrieve_view

#: What discovery reads of every VM, in one PropertyCollector pass.
VM_PATHS = (
    "name",
    "parent",
    "parentVApp",
    "config.uuid",
    "config.guestId",
    "config.guestFullName",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.firmware",
    "config.bootOptions.efiSecureBootEnabled",
    "config.bootOptions.bootOrder",
    "config.changeTrackingEnabled",
    "runtime.powerState",
    "runtime.host",
)

#: Inventory objects whose names make up paths and device descriptions.
NAMED_TYPES = (
    vim.Folder,
    vim.Datacenter,
    vim.VirtualApp,
    vim.Datastore,
    vim.Network,
    vim.HostSystem,
)

#: VirtualEthernetCard subclasses → adapter type words.
ADAPTER_TYPES: tuple[tuple[type, str], ...] = (
    (vim.vm.device.VirtualVmxnet3Vrdma, "vmxnet3vrdma"),
    (vim.vm.device.VirtualVmxnet3, "vmxnet3"),
    (vim.vm.device.VirtualVmxnet2, "vmxnet2"),
    (vim.vm.device.VirtualVmxnet, "vmxnet"),
    (vim.vm.device.VirtualE1000e, "e1000e"),
    (vim.vm.device.VirtualE1000, "e1000"),
    (vim.vm.device.VirtualPCNet32, "pcnet32"),
    (vim.vm.device.VirtualSriovEthernetCard, "sriov"),
)


#: Disk controller classes → controller type words (AHCI is the SATA controller vSphere has).
CONTROLLER_TYPES: tuple[tuple[type, str], ...] = (
    (vim.vm.device.VirtualIDEController, "ide"),
    (vim.vm.device.VirtualSATAController, "sata"),
    (vim.vm.device.VirtualNVMEController, "nvme"),
    (vim.vm.device.VirtualSCSIController, "scsi"),
)

#: Bootable device classes of ``config.bootOptions.bootOrder`` → boot order entry types.
BOOT_DEVICE_TYPES: tuple[tuple[type, str], ...] = (
    (vim.vm.BootOptions.BootableDiskDevice, "disk"),
    (vim.vm.BootOptions.BootableEthernetDevice, "network"),
    (vim.vm.BootOptions.BootableCdromDevice, "cdrom"),
    (vim.vm.BootOptions.BootableFloppyDevice, "floppy"),
)


@dataclass
class Names:
    """Names and parents of folders, datacenters, vApps, datastores, networks and ESXi hosts,
    by moref id."""

    name: dict[str, str] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)
    datacenters: dict[str, Any] = field(default_factory=dict)  # name -> vim.Datacenter

    def path_of(self, first_parent: Any, leaf: str) -> str:
        """Inventory path ``/DC/vm/folder/leaf`` from an object's parent upwards."""
        parts = [leaf]
        ref = _moid(first_parent)
        seen: set[str] = set()
        while ref and ref in self.name and ref not in seen:
            seen.add(ref)
            parts.append(self.name[ref])
            ref = self.parent.get(ref)
        return "/" + "/".join(reversed(parts))


def _moid(obj: Any) -> str | None:
    return obj._moId if obj is not None else None


def read_names(si: vim.ServiceInstance) -> Names:
    """One bulk read of every named container object below the root folder."""
    names = Names()
    paths: dict[type, tuple[str, ...]] = {t: ("name", "parent") for t in NAMED_TYPES}
    # a vApp's parent may be a resource pool; its inventory path runs through parentFolder
    paths[vim.VirtualApp] = ("name", "parent", "parentFolder")
    for obj, props in retrieve_view(si, si.content.rootFolder, paths):
        moid = obj._moId
        if "name" in props:
            names.name[moid] = props["name"]
        parent = props.get("parentFolder") or props.get("parent")
        if parent is not None:
            names.parent[moid] = parent._moId
        if isinstance(obj, vim.Datacenter) and "name" in props:
            names.datacenters[props["name"]] = obj
    return names


def _provisioning(backing: Any) -> str:
    if isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
        return "rdm"
    if getattr(backing, "thinProvisioned", False):
        return "thin"
    if getattr(backing, "eagerlyScrub", False):
        return "thick_eager_zeroed"
    return "thick_lazy_zeroed"


def controllers_of(devices: list[Any]) -> dict[int, tuple[str, int | None]]:
    """Disk controllers by device key: ``(type word, bus number)``."""
    found = {}
    for dev in devices:
        for cls, word in CONTROLLER_TYPES:
            if isinstance(dev, cls):
                found[dev.key] = (word, getattr(dev, "busNumber", None))
                break
    return found


def boot_order(entries: list[Any] | None) -> list[dict[str, Any]]:
    """``config.bootOptions.bootOrder`` as boot order entries (unknown device kinds skipped)."""
    order = []
    for entry in entries or []:
        kind = next((word for cls, word in BOOT_DEVICE_TYPES if isinstance(entry, cls)), None)
        if kind is None:
            continue
        key = getattr(entry, "deviceKey", None)
        order.append({"type": kind, **({"key": str(key)} if key is not None else {})})
    return order


def disk_dict(
    dev: vim.vm.device.VirtualDisk,
    names: Names,
    controllers: dict[int, tuple[str, int | None]] | None = None,
) -> dict[str, Any]:
    """The VMA's description of one virtual disk (``controllers``: :func:`controllers_of`)."""
    backing = dev.backing
    capacity = dev.capacityInBytes or (dev.capacityInKB or 0) * 1024
    datastore = getattr(backing, "datastore", None)
    vmdk_path = getattr(backing, "fileName", None)
    ds_name = names.name.get(datastore._moId) if datastore is not None else None
    if ds_name is None and vmdk_path and vmdk_path.startswith("["):
        ds_name = vmdk_path[1 : vmdk_path.index("]")]
    controller = (controllers or {}).get(dev.controllerKey)
    return {
        "key": str(dev.key),
        "label": dev.deviceInfo.label if dev.deviceInfo else f"disk-{dev.key}",
        "capacity_bytes": int(capacity),
        "datastore": ds_name,
        "vmdk_path": vmdk_path,
        "provisioning": _provisioning(backing),
        "controller_key": dev.controllerKey,
        "controller_type": controller[0] if controller else None,
        "controller_bus": controller[1] if controller else None,
        "unit_number": dev.unitNumber,
    }


def _adapter_type(dev: Any) -> str:
    for cls, word in ADAPTER_TYPES:
        if isinstance(dev, cls):
            return word
    return type(dev).__name__


def nic_dict(dev: vim.vm.device.VirtualEthernetCard, names: Names) -> dict[str, Any]:
    """The VMA's description of one network adapter."""
    backing = dev.backing
    network = None
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
        network = backing.deviceName or (
            names.name.get(backing.network._moId) if backing.network is not None else None
        )
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        key = backing.port.portgroupKey if backing.port else None
        network = names.name.get(key, key) if key else None
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        network = backing.opaqueNetworkId
    return {
        "key": str(dev.key),
        "label": dev.deviceInfo.label if dev.deviceInfo else f"nic-{dev.key}",
        "network": network,
        "mac": dev.macAddress,
        "adapter_type": _adapter_type(dev),
    }


def vm_dict(obj: vim.VirtualMachine, props: dict[str, Any], names: Names) -> dict[str, Any]:
    """A VM dict from one VM's bulk-read properties."""
    devices = props.get("config.hardware.device") or []
    controllers = controllers_of(devices)
    parent = props.get("parent") or props.get("parentVApp")
    name = props.get("name", obj._moId)
    return {
        "id": props.get("config.uuid"),
        "moref": obj._moId,
        "name": name,
        "path": names.path_of(parent, name),
        "power_state": str(props.get("runtime.powerState", "unknown")),
        "host": names.name.get(_moid(props.get("runtime.host")) or ""),
        "guest_os": props.get("config.guestId"),
        "guest_full_name": props.get("config.guestFullName"),
        "cpus": props.get("config.hardware.numCPU"),
        "memory_mb": props.get("config.hardware.memoryMB"),
        "firmware": props.get("config.firmware") or "bios",
        "secure_boot": bool(props.get("config.bootOptions.efiSecureBootEnabled", False)),
        "cbt_enabled": bool(props.get("config.changeTrackingEnabled", False)),
        "boot_order": boot_order(props.get("config.bootOptions.bootOrder")),
        "disks": [
            disk_dict(d, names, controllers)
            for d in devices
            if isinstance(d, vim.vm.device.VirtualDisk)
        ],
        "nics": [
            nic_dict(d, names) for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)
        ],
    }


def in_datacenter(vm: dict[str, Any], datacenter: str | None) -> bool:
    """True when ``vm``'s inventory path lies in ``datacenter`` (or no datacenter is asked)."""
    return datacenter is None or vm["path"].startswith(f"/{datacenter}/")


def list_vms(si: vim.ServiceInstance, datacenter: str | None = None) -> list[dict[str, Any]]:
    """Every VM (templates and VMs without a config excluded), sorted by path."""
    names = read_names(si)
    container = si.content.rootFolder
    if datacenter is not None:
        if datacenter not in names.datacenters:
            raise VmwareError(f"datacenter {datacenter!r} not found")
        container = names.datacenters[datacenter]
    vms = []
    for obj, props in retrieve_view(si, container, {vim.VirtualMachine: VM_PATHS}):
        if not props.get("config.uuid") or props.get("config.template"):
            continue
        vm = vm_dict(obj, props, names)
        if in_datacenter(vm, datacenter):
            vms.append(vm)
    vms.sort(key=lambda v: v["path"])
    return vms


def read_vm(si: vim.ServiceInstance, obj: vim.VirtualMachine) -> dict[str, Any]:
    """One VM dict (a bulk read of just that VM plus the name tables)."""
    names = read_names(si)
    found = retrieve_objects(si, [obj], VM_PATHS)
    return vm_dict(obj, found[0][1] if found else {}, names)
