"""VM snapshots: createVMSnapshot, listVMSnapshot, deleteVMSnapshot.

Only their state matters to the simulator: a VM that has VM snapshots can neither attach nor
detach volumes (``VolumeApiServiceImpl.checkForDevicesInCopies`` / ``detachVolumeFromVM``).
No bytes are copied. Rules from
``server/src/main/java/com/cloud/vm/snapshot/VMSnapshotManagerImpl.java``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .catalog import page
from .errors import bad_value, internal
from .jobs import Call, JobRunner
from .params import Params
from .store import Store, new_id, now_text
from .views import OWNER, mark_pending
from .volumes import vm_number


def _table(store: Store) -> dict[str, dict[str, Any]]:
    return store.data.setdefault("vm_snapshots", {})


def view(store: Store, snap: dict[str, Any]) -> dict[str, Any]:
    """A VM snapshot as ``listVMSnapshot``/job results show it (VMSnapshotResponse)."""
    zone = store.data["zones"][0]
    vm = store.data["vms"].get(snap["virtualmachineid"], {})
    out = {
        "id": snap["id"],
        "name": snap["name"],
        "displayname": snap["displayname"],
        "description": snap["description"],
        "state": snap["state"],
        "type": snap["type"],
        "current": True,
        "virtualmachineid": snap["virtualmachineid"],
        "virtualmachinename": vm.get("name", ""),
        "zoneid": zone["id"],
        "hypervisor": "KVM",
        "created": snap["created"],
        "tags": [],
        **OWNER,
    }
    mark_pending(store, snap["id"], out)
    return out


def create_vm_snapshot(call: Call, p: Params) -> dict[str, Any]:
    """createVMSnapshot (async create): virtualmachineid, name, description, snapshotmemory,
    quiescevm."""
    store = call.store
    vm = p.entity(store.data["vms"], "virtualmachineid")
    memory = p.boolean("snapshotmemory", False)
    p.boolean("quiescevm", False)
    table = _table(store)
    # VMSnapshotManagerImpl.allocVMSnapshot
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    name = f"{vm['instancename']}_VS_{stamp}"
    display = p.get("name") or name
    mine = [s for s in table.values() if s["virtualmachineid"] == vm["id"]]
    if any(s["displayname"] == display for s in mine):
        raise bad_value(
            f"Creating VM snapshot failed due to VM snapshot with name{display}  already exists"
        )
    if vm["state"] not in ("Running", "Stopped"):
        raise bad_value(
            f"Creating vm snapshot failed due to VM:{vm_number(vm)} is not in the running or "
            "Stopped state"
        )
    if memory and vm["state"] == "Stopped":
        raise bad_value("Can not snapshot memory when VM is in stopped state")
    if vm["state"] == "Running" and not memory:
        raise bad_value(
            "KVM VM does not allow to take a disk-only snapshot when VM is in running state"
        )
    limit = store.setting("vmsnapshot.max")
    if len(mine) >= limit:
        raise internal(
            f"Creating vm snapshot failed due to a VM can just have : {limit} VM snapshots. "
            "Please delete old ones"
        )
    snap_id = new_id()
    table[snap_id] = {
        "id": snap_id,
        "name": name,
        "displayname": display,
        "description": p.get("description") or "",
        "state": "Allocated",
        "type": "DiskAndMemory" if memory else "Disk",
        "virtualmachineid": vm["id"],
        "created": now_text(),
    }
    jobid = call.job("createVMSnapshot", "VmSnapshot", snap_id, {"id": snap_id})
    return {"id": snap_id, "jobid": jobid}


def _finish_create(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    snap = _table(store)[args["id"]]
    snap["state"] = "Ready"
    return {"vmsnapshot": view(store, snap)}


def _undo_create(store: Store, args: dict[str, Any]) -> None:
    _table(store).pop(args["id"], None)


def list_vm_snapshots(store: Store, p: Params) -> dict[str, Any]:
    """listVMSnapshot: vmsnapshotid, virtualmachineid, name (name or display name), state."""
    table = _table(store)
    items = sorted(table.values(), key=lambda s: s["created"])
    if p.get("vmsnapshotid") is not None:
        items = [p.entity(table, "vmsnapshotid")]
    vm_id = p.get("virtualmachineid")
    if vm_id is not None:
        p.entity(store.data["vms"], "virtualmachineid")
        items = [s for s in items if s["virtualmachineid"] == vm_id]
    name = p.get("name")
    if name is not None:
        items = [s for s in items if name in (s["name"], s["displayname"])]
    state = p.get("state")
    if state is not None:
        items = [s for s in items if s["state"].lower() == state.lower()]
    # ListVMSnapshotCmd.execute names the list entries "vmSnapshot"
    return page(store, p, "vmSnapshot", [view(store, s) for s in items])


def delete_vm_snapshot(call: Call, p: Params) -> dict[str, Any]:
    """deleteVMSnapshot (async): vmsnapshotid."""
    snap = p.entity(_table(call.store), "vmsnapshotid")
    return {"jobid": call.job("deleteVMSnapshot", "VmSnapshot", snap["id"], {"id": snap["id"]})}


def _finish_delete(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    if _table(store).pop(args["id"], None) is None:
        raise bad_value(f"unable to find the vm snapshot with id {args['id']}")
    return {"success": True}


def register(store: Store, jobs: JobRunner) -> None:
    """Hook the VM snapshot finishers into the job runner."""
    jobs.register(
        "createVMSnapshot", lambda a: _finish_create(store, a), lambda a: _undo_create(store, a)
    )
    jobs.register("deleteVMSnapshot", lambda a: _finish_delete(store, a))
