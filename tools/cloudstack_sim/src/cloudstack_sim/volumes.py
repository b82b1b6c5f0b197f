"""Volume commands: createVolume, attachVolume, detachVolume, deleteVolume, listVolumes.

State rules (as CloudStack enforces them): a data volume is ``Allocated`` until its first
attach, then ``Ready``; attach only to a Stopped or Running VM and only a volume that is not
attached; device ids are unique per VM; a ROOT volume is not detached while its VM runs; a
volume attached as device 0 to a stopped VM without a ROOT volume becomes its ROOT volume
(how a migrated boot disk replaces a template's root disk); delete only a detached volume.
"""

from __future__ import annotations

from typing import Any

from . import views
from .catalog import filter_items, page
from .errors import bad_value, invalid
from .jobs import Call, JobRunner
from .params import Params
from .store import GIB, Store, new_id, now_text

MAX_DEVICE_ID = 15


def _pending(store: Store, vol_id: str) -> bool:
    return any(
        j["jobinstanceid"] == vol_id and j["jobstatus"] == 0 for j in store.data["jobs"].values()
    )


def create_volume(call: Call, p: Params) -> dict[str, Any]:
    """createVolume (async create): name, zoneid, diskofferingid, size (GB, custom only)."""
    d = call.store.data
    name = p.req("name")
    p.entity(d["zones"], "zoneid")
    offering = p.entity(d["disk_offerings"], "diskofferingid")
    size_gb = p.integer("size")
    if offering["iscustomized"]:
        if size_gb is None:
            raise bad_value("This disk offering requires a custom size specified")
        if size_gb <= 0:
            raise bad_value(f"Invalid size {size_gb} GB: the size must be a positive number")
    else:
        if size_gb is not None and size_gb != offering["disksize"]:
            raise bad_value("This disk offering does not allow custom size")
        size_gb = offering["disksize"]
    vol_id = new_id()
    d["volumes"][vol_id] = {
        "id": vol_id,
        "name": name,
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


def _finish_create(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    vol = store.data["volumes"][args["id"]]
    store.create_backing(vol["id"], vol["size"])
    return {"volume": views.volume(store, vol)}


def _undo_create(store: Store, args: dict[str, Any]) -> None:
    store.data["volumes"].pop(args["id"], None)
    store.remove_backing(args["id"])


def attach_volume(call: Call, p: Params) -> dict[str, Any]:
    """attachVolume (async): id, virtualmachineid, deviceid (optional)."""
    d = call.store.data
    vol = p.entity(d["volumes"], "id")
    vm = p.entity(d["vms"], "virtualmachineid")
    device = p.integer("deviceid")
    jobid = call.job(
        "attachVolume", "Volume", vol["id"], {"id": vol["id"], "vm": vm["id"], "deviceid": device}
    )
    return {"jobid": jobid}


def _finish_attach(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    d = store.data
    vol = d["volumes"].get(args["id"])
    vm = d["vms"].get(args["vm"])
    if vol is None:
        raise bad_value(f"Unable to find volume with id {args['id']}")
    if vm is None:
        raise bad_value(f"Unable to find VM with id {args['vm']}")
    if vol.get("virtualmachineid"):
        raise bad_value("Please specify a volume that is not attached to any VM.")
    if vm["state"] not in ("Running", "Stopped"):
        raise bad_value("Please specify a VM that is either running or stopped.")
    used = {v["deviceid"] for v in d["volumes"].values() if v.get("virtualmachineid") == vm["id"]}
    device = args["deviceid"]
    if device is None:
        device = next(i for i in range(1, MAX_DEVICE_ID + 2) if i not in used)
        if device > MAX_DEVICE_ID:
            raise bad_value(f"The VM {vm['name']} has the maximum number of data disks attached")
    elif not 0 <= device <= MAX_DEVICE_ID:
        raise bad_value(f"deviceId should be between 0 and {MAX_DEVICE_ID}")
    elif device == 0:
        # attaching as root (e.g. a migrated boot disk): VM stopped and without a ROOT volume
        if 0 in used:
            raise bad_value(f"VM {vm['name']} already has a root volume attached to it")
        if vm["state"] != "Stopped":
            raise bad_value("Root volume attach is only allowed while the VM is stopped")
    elif device in used:
        raise bad_value(f"deviceId {device} is used by VM {vm['name']}")
    # Like CloudStack: root-disk rules apply only to deviceid 0; a former ROOT volume attached
    # elsewhere (e.g. back to the OMA on rollback) becomes a data disk again.
    vol["type"] = "ROOT" if device == 0 else "DATADISK"
    vol.update(virtualmachineid=vm["id"], deviceid=device, state="Ready", attached=now_text())
    store.create_backing(vol["id"], vol["size"])
    if vm["id"] == d["oma_vm_id"]:
        store.link(vol["id"])
    return {"volume": views.volume(store, vol)}


def detach_volume(call: Call, p: Params) -> dict[str, Any]:
    """detachVolume (async): id, or virtualmachineid + deviceid."""
    d = call.store.data
    if p.get("id") is None and p.get("virtualmachineid") is not None:
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
            raise bad_value(f"Unable to find volume with deviceid {device} on VM {vm['name']}")
    else:
        vol = p.entity(d["volumes"], "id")
    jobid = call.job("detachVolume", "Volume", vol["id"], {"id": vol["id"]})
    return {"jobid": jobid}


def _finish_detach(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    d = store.data
    vol = d["volumes"].get(args["id"])
    if vol is None:
        raise bad_value(f"Unable to find volume with id {args['id']}")
    vm = d["vms"].get(vol.get("virtualmachineid") or "")
    if vm is None:
        raise bad_value("Please specify a volume that is attached to a VM.")
    if vm["state"] not in ("Running", "Stopped"):
        raise bad_value("Please specify a VM that is either running or stopped.")
    if vol["type"] == "ROOT" and vm["state"] != "Stopped":
        raise bad_value("Root volume detach is only allowed while the VM is stopped")
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
    return page(p, "volume", [views.volume(store, v) for v in items])


def register(store: Store, jobs: JobRunner) -> None:
    """Hook the volume finishers into the job runner."""
    jobs.register(
        "createVolume", lambda a: _finish_create(store, a), lambda a: _undo_create(store, a)
    )
    jobs.register("attachVolume", lambda a: _finish_attach(store, a))
    jobs.register("detachVolume", lambda a: _finish_detach(store, a))
