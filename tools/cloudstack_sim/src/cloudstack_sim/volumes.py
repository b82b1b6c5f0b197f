"""Volume commands: createVolume, attachVolume, detachVolume, deleteVolume, listVolumes.

Every rule below comes from apache/cloudstack and names its place (mostly
``server/src/main/java/com/cloud/storage/VolumeApiServiceImpl.java`` and
``engine/schema/src/main/java/com/cloud/storage/dao/VolumeDaoImpl.java``). Rules checked inside
an async job fail the job (``jobstatus 2``) like on a real server.
"""

from __future__ import annotations

from typing import Any

from . import views
from .catalog import filter_items, page
from .errors import bad_value, internal, invalid
from .jobs import Call, JobRunner
from .params import Params
from .store import GIB, Store, new_id, now_text, sparse_copy

CDROM_DEVICE_ID = 3


def _pending(store: Store, vol_id: str) -> bool:
    return any(
        j["jobinstanceid"] == vol_id and j["jobstatus"] == 0 for j in store.data["jobs"].values()
    )


def readable_size(size: int) -> str:
    """``NumbersUtil.toReadableSize``: bytes as CloudStack prints them in error texts."""
    units = ((1024**4, "%.4f TB"), (1024**3, "%.2f GB"), (1024**2, "%.2f MB"), (1024, "%.2f KB"))
    for unit, fmt in units:
        if size >= unit:
            return fmt % (size / unit)
    return f"{size} bytes"


def _check_size(store: Store, size_gb: int, customized: bool) -> None:
    if customized:
        # VolumeApiServiceImpl.validateCustomDiskOfferingSizeRange
        low = store.setting("custom.diskoffering.size.min")
        high = store.setting("custom.diskoffering.size.max")
        if size_gb < low or size_gb > high:
            raise bad_value(
                f"Volume size: {size_gb} GB is out of allowed range. Min: {low}. Max: {high}"
            )
    # VolumeApiServiceImpl.validateVolumeSizeInBytes (storage.max.volume.size, GB)
    limit = store.setting("storage.max.volume.size")
    if size_gb > limit:
        raise bad_value(
            f"Requested volume size is {readable_size(size_gb * GIB)}, but the maximum size "
            f"allowed is {limit} GB."
        )


def create_volume(call: Call, p: Params) -> dict[str, Any]:
    """createVolume (async create): name (optional), zoneid, diskofferingid, size (GB); or
    snapshotid (a volume from a snapshot, :func:`_from_snapshot`)."""
    store = call.store
    d = store.data
    # VolumeApiServiceImpl.allocVolume
    if p.get("diskofferingid") is None and p.get("snapshotid") is None:
        raise bad_value(
            "At least one of disk Offering ID or snapshot ID must be passed whilst creating volume"
        )
    if p.get("snapshotid") is not None:
        return _from_snapshot(call, p)
    p.entity(d["zones"], "zoneid")
    size_gb = p.integer("size")
    # VolumeApiServiceImpl.allocVolume: a given size must be positive
    if size_gb is not None and size_gb <= 0:
        raise bad_value("Disk size must be larger than 0")
    offering = p.entity(d["disk_offerings"], "diskofferingid")
    if offering["iscustomized"]:
        # VolumeApiServiceImpl.allocVolume
        if size_gb is None:
            raise bad_value("This disk offering requires a custom size specified")
    elif size_gb is not None:
        # VolumeApiServiceImpl.allocVolume: even when the size equals the offering's
        raise bad_value("This disk offering does not allow custom size")
    else:
        size_gb = offering["disksize"]
    _check_size(store, size_gb, offering["iscustomized"])
    vol_id = new_id()
    d["volumes"][vol_id] = {
        "id": vol_id,
        # VolumeApiServiceImpl.getVolumeNameFromCommand: a blank name becomes a random uuid
        "name": p.get("name") or new_id(),
        "type": "DATADISK",
        "size": size_gb * GIB,
        "zoneid": d["zones"][0]["id"],
        "state": "Allocated",
        "diskofferingid": offering["id"],
        "virtualmachineid": None,
        "deviceid": None,
        "created": now_text(),
    }
    jobid = call.job("createVolume", "Volume", vol_id, {"id": vol_id})
    return {"id": vol_id, "jobid": jobid}


def _from_snapshot(call: Call, p: Params) -> dict[str, Any]:
    """createVolume with ``snapshotid`` (``VolumeApiServiceImpl.allocVolume``, then
    ``createVolume`` → ``createVolumeFromSnapshot``): a DATADISK of the snapshot's size and disk
    offering, created on primary storage by the job (``Ready``, the snapshot's bytes)."""
    d = call.store.data
    snap = p.entity(d.setdefault("snapshots", {}), "snapshotid")
    parent = d["volumes"].get(snap["volumeid"])
    parent_type = parent["type"] if parent else snap["volumetype"]
    # allocVolume: "disallow passing disk offering ID with DATA disk volume snapshots"
    if p.get("diskofferingid") is not None and parent_type != "ROOT":
        raise bad_value(
            "Disk Offering ID cannot be passed whilst creating volume from snapshot other than "
            "ROOT disk snapshots"
        )
    # allocVolume: only a BackedUp snapshot makes a volume
    if snap["state"] != "BackedUp":
        raise bad_value(
            f"Snapshot id={snap['id']} is not in BackedUp state yet and can't be used for volume "
            "creation"
        )
    # allocVolume: without zoneid the volume goes to the snapshot's zone
    zone = p.entity(d["zones"], "zoneid", required=False) or d["zones"][0]
    offering_id = snap.get("diskofferingid") or (parent or {}).get("diskofferingid")
    size = snap["size"]
    if p.get("diskofferingid") is not None:  # a ROOT snapshot with an offering
        offering = p.entity(d["disk_offerings"], "diskofferingid")
        size_gb = p.integer("size")
        if offering["iscustomized"] and size_gb is None:
            raise bad_value("This disk offering requires a custom size specified")
        wanted = (size_gb if offering["iscustomized"] else offering["disksize"]) * GIB
        # allocVolume: the offering's (or the custom) size must hold the snapshot
        if wanted < size:
            raise bad_value(
                f"Invalid size for volume creation: {wanted // GIB}GB, snapshot size is: "
                f"{size // GIB}GB"
            )
        offering_id, size = offering["id"], wanted
    vol_id = new_id()
    d["volumes"][vol_id] = {
        "id": vol_id,
        # VolumeApiServiceImpl.getVolumeNameFromCommand: a blank name becomes a random uuid
        "name": p.get("name") or new_id(),
        # commitVolume: every volume createVolume makes is a DATADISK
        "type": "DATADISK",
        "size": size,
        "zoneid": zone["id"],
        "state": "Allocated",
        "diskofferingid": offering_id,
        "snapshotid": snap["id"],
        "virtualmachineid": None,
        "deviceid": None,
        "created": now_text(),
    }
    jobid = call.job("createVolume", "Volume", vol_id, {"id": vol_id, "snapshot": snap["id"]})
    return {"id": vol_id, "jobid": jobid}


def _finish_create(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    vol = store.data["volumes"][args["id"]]
    snap_id = args.get("snapshot")
    if snap_id is None:
        store.create_backing(vol["id"], vol["size"])
        return {"volume": views.volume(store, vol)}
    # createVolumeFromSnapshot: the volume is created on primary storage from the snapshot's
    # bytes at once (Ready), not left Allocated until a VM starts
    if snap_id not in store.data.setdefault("snapshots", {}):
        raise bad_value(f"unable to find a snapshot with id {snap_id}")
    path = store.backing_path(vol["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    sparse_copy(store.snapshot_path(snap_id), path)
    if path.stat().st_size < vol["size"]:
        with open(path, "r+b") as fh:
            fh.truncate(vol["size"])
    vol["state"] = "Ready"
    return {"volume": views.volume(store, vol)}


def _undo_create(store: Store, args: dict[str, Any]) -> None:
    store.data["volumes"].pop(args["id"], None)
    store.remove_backing(args["id"])


def attach_volume(call: Call, p: Params) -> dict[str, Any]:
    """attachVolume (async): id, virtualmachineid, deviceid (optional).

    The job stays pending ``sim.attach.delay`` seconds (plus any injected delay): a real attach
    may first move the volume to the VM's cluster (``orchestrateAttachVolumeToVM`` →
    ``moveVolume``), which takes minutes for big volumes.
    """
    d = call.store.data
    vol = p.entity(d["volumes"], "id")
    vm = p.entity(d["vms"], "virtualmachineid")
    device = p.integer("deviceid")
    jobid = call.job(
        "attachVolume",
        "Volume",
        vol["id"],
        {"id": vol["id"], "vm": vm["id"], "deviceid": device},
        extra_delay=call.store.setting("sim.attach.delay"),
    )
    return {"jobid": jobid}


def vm_number(vm: dict[str, Any]) -> int:
    """The VM's internal database id (CloudStack prints it in some error texts)."""
    return int(vm.get("num") or vm["instancename"].split("-")[2])


def _check_root_detach_attach(vm: dict[str, Any]) -> None:
    # VolumeApiServiceImpl.validateRootVolumeDetachAttach: KVM (the fixture's hypervisor) is
    # supported; the VM must be Stopped (the text also names Destroyed, the check does not allow it)
    if vm["state"] != "Stopped":
        raise bad_value(
            "Root volume detach can happen only when vm is in states: Stopped or Destroyed"
        )


def _has_vm_snapshots(store: Store, vm: dict[str, Any]) -> bool:
    return any(
        s["virtualmachineid"] == vm["id"]
        for s in store.data.setdefault("vm_snapshots", {}).values()
    )


def _device_id(store: Store, vm: dict[str, Any], device: int | None) -> int:
    """VolumeApiServiceImpl.getDeviceId: max data volumes + ROOT + CD-ROM (3, never a disk)."""
    max_id = store.setting("sim.kvm.max.data.volumes") + 1
    used = {
        v["deviceid"]
        for v in store.data["volumes"].values()
        if v.get("virtualmachineid") == vm["id"]
    }
    if device is not None:
        if device < 0 or device > max_id or device == CDROM_DEVICE_ID:
            raise internal(f"deviceId should be 0,1,2,4-{max_id}")
        if device in used:
            raise internal(f"deviceId {device} is used by vm {vm_number(vm)}")
        return device
    free = [i for i in range(1, max_id + 1) if i != CDROM_DEVICE_ID and i not in used]
    if not free:
        raise internal(f"All device Ids are used by vm {vm_number(vm)}")
    return free[0]


def _finish_attach(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    d = store.data
    vol = d["volumes"].get(args["id"])
    vm = d["vms"].get(args["vm"])
    if vol is None:
        raise bad_value(f"Unable to find volume with id {args['id']}")
    # VolumeApiServiceImpl.getAndCheckUserVmVO
    if vm is None:
        raise bad_value("Please specify a valid User VM.")
    # VolumeApiServiceImpl.getAndCheckVolumeInfo
    if vol.get("virtualmachineid"):
        raise bad_value("Please specify a volume that is not attached to any VM.")
    if vol["state"] not in ("Allocated", "Ready", "Uploaded"):
        raise bad_value("Volume state must be in Allocated, Ready or in Uploaded state")
    # VolumeApiServiceImpl.getAndCheckUserVmVO
    if vm["state"] not in ("Running", "Stopped"):
        raise bad_value("Please specify a VM that is either running or stopped.")
    on_vm = [v for v in d["volumes"].values() if v.get("virtualmachineid") == vm["id"]]
    device = args["deviceid"]
    if device == 0:
        # VolumeApiServiceImpl.checkDeviceId
        _check_root_detach_attach(vm)
        if any(v["deviceid"] == 0 for v in on_vm):
            raise bad_value("Vm already has root volume attached to it")
    else:
        # VolumeApiServiceImpl.checkNumberOfAttachedVolumes (getMaxDataVolumesSupported: the
        # hypervisor_capabilities limit, KVM 32)
        limit = store.setting("sim.kvm.max.data.volumes")
        if sum(v["type"] == "DATADISK" for v in on_vm) >= limit:
            raise bad_value(
                f"The specified VM already has the maximum number of data disks ({limit}) "
                "attached. Please specify another VM."
            )
    # VolumeApiServiceImpl.checkForDevicesInCopies
    if _has_vm_snapshots(store, vm):
        raise bad_value(
            f"Unable to attach volume to VM {vm['instancename']}/{vm['id']}, please specify a VM "
            "that does not have VM snapshots"
        )
    if vm.get("backupofferingid"):
        raise bad_value(
            f"Unable to attach volume to VM {vm['instancename']}/{vm['id']}, please specify a VM "
            "that does not have any backups"
        )
    # VolumeApiServiceImpl.orchestrateAttachVolumeToVM: an Allocated volume is created on primary
    # storage only when the VM's ROOT (or another data) volume already is; else it stays Allocated
    root = next((v for v in on_vm if v["type"] == "ROOT"), None)
    existing = root or next((v for v in on_vm if v["state"] != "Allocated"), None)
    if vol["state"] == "Allocated" and existing is not None and existing["state"] != "Allocated":
        vol["state"] = "Ready"
    device = _device_id(store, vm, device)
    # VolumeDaoImpl.attachVolume: a volume attached as device 0 becomes the ROOT volume
    if device == 0:
        vol["type"] = "ROOT"
    vol.update(virtualmachineid=vm["id"], deviceid=device, attached=now_text())
    store.create_backing(vol["id"], vol["size"])
    if vm["id"] == d["oma_vm_id"]:
        store.link(vol["id"])
    return {"volume": views.volume(store, vol)}


def detach_volume(call: Call, p: Params) -> dict[str, Any]:
    """detachVolume (async): id, or virtualmachineid + deviceid."""
    d = call.store.data
    has_id = p.get("id") is not None
    has_vm, has_dev = p.get("virtualmachineid") is not None, p.get("deviceid") is not None
    # VolumeApiServiceImpl.detachVolumeFromVM
    if (has_id and (has_vm or has_dev)) or (not has_id and not (has_vm and has_dev)):
        raise bad_value("Please provide either a volume id, or a tuple(device id, instance id)")
    if not has_id:
        vm = p.entity(d["vms"], "virtualmachineid")
        device = p.integer("deviceid", required=True)
        vol = next(
            (
                v
                for v in d["volumes"].values()
                if v.get("virtualmachineid") == vm["id"] and v["deviceid"] == device
            ),
            None,
        )
        if vol is None:
            raise bad_value("Unable to find volume with ID: null")
    else:
        vol = p.entity(d["volumes"], "id")
    jobid = call.job("detachVolume", "Volume", vol["id"], {"id": vol["id"]})
    return {"jobid": jobid}


def _finish_detach(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    d = store.data
    vol = d["volumes"].get(args["id"])
    if vol is None:
        raise bad_value(f"Unable to find volume with ID: {args['id']}")
    # VolumeApiServiceImpl.detachVolumeFromVM
    vm = d["vms"].get(vol.get("virtualmachineid") or "")
    if vm is None:
        raise bad_value("The specified volume is not attached to a VM.")
    if vm["state"] not in ("Running", "Stopped", "Destroyed"):
        raise bad_value("Please specify a VM that is either running or stopped.")
    if vol["type"] == "ROOT":
        _check_root_detach_attach(vm)
    if _has_vm_snapshots(store, vm):
        raise bad_value(
            "Unable to detach volume, please specify a VM that does not have VM snapshots"
        )
    # VolumeApiServiceImpl.validateIfVmHasBackups (assigning an offering records the backup
    # volumes, so an assigned VM has them)
    if vm.get("backupofferingid") and not store.setting("backup.enable.attach.detach.of.volumes"):
        raise bad_value(
            "Unable to detach volume, cannot detach volume from a VM that has backups. First "
            "remove the VM from the backup offering or set the global configuration "
            "'backup.enable.attach.detach.of.volumes' to true."
        )
    # VolumeDaoImpl.detachVolume: a detached ROOT volume becomes a DATADISK
    if vol["type"] == "ROOT":
        vol["type"] = "DATADISK"
    vol.update(virtualmachineid=None, deviceid=None)
    vol.pop("attached", None)
    store.unlink(vol["id"])
    return {"volume": views.volume(store, vol)}


def delete_volume(store: Store, p: Params) -> dict[str, Any]:
    """deleteVolume (sync): id; only a detached volume with no job running on it."""
    vol = p.entity(store.data["volumes"], "id")
    if vol.get("virtualmachineid"):
        raise bad_value("Please specify a volume that is not attached to any VM.")
    if _pending(store, vol["id"]):
        raise bad_value(f"Volume {vol['name']} has a pending job; try again later")
    store.data["volumes"].pop(vol["id"])
    store.remove_backing(vol["id"])
    store.unlink(vol["id"])
    store.save()
    return {"success": True}


def list_volumes(store: Store, p: Params) -> dict[str, Any]:
    """listVolumes: id, virtualmachineid, name, type, zoneid, keyword, page/pagesize."""
    d = store.data
    items = sorted(d["volumes"].values(), key=lambda v: v["created"])
    if p.get("id") is not None:
        items = [p.entity(d["volumes"], "id")]
    vm_id = p.get("virtualmachineid")
    if vm_id is not None:
        if vm_id not in d["vms"]:
            raise invalid(p.command, "virtualmachineid", vm_id)
        items = [v for v in items if v.get("virtualmachineid") == vm_id]
    items = filter_items(p, items, "name", "type")
    return page(store, p, "volume", [views.volume(store, v) for v in items])


def register(store: Store, jobs: JobRunner) -> None:
    """Hook the volume finishers into the job runner."""
    jobs.register(
        "createVolume", lambda a: _finish_create(store, a), lambda a: _undo_create(store, a)
    )
    jobs.register("attachVolume", lambda a: _finish_attach(store, a))
    jobs.register("detachVolume", lambda a: _finish_detach(store, a))
