"""Volume snapshots: createSnapshot, listSnapshots, deleteSnapshot, revertSnapshot.

A snapshot is a sparse copy of the volume's backing file (``<state-dir>/snapshots/<id>.img``).
Rules: only a ``Ready`` volume can be snapshotted (``VolumeApiServiceImpl.allocSnapshot``); a
revert needs a Ready volume that is detached or whose VM is stopped and has no VM snapshots
(``SnapshotManagerImpl.revertSnapshot``), and rewrites the backing file in place (same inode, so
by-id links and exports stay valid).
"""

from __future__ import annotations

from typing import Any

from .catalog import page
from .errors import CS_CLOUD_RUNTIME, INTERNAL_ERROR, ApiError, bad_value
from .jobs import Call, JobRunner
from .params import Params
from .store import Store, new_id, now_text, sparse_copy


def _table(store: Store) -> dict[str, dict[str, Any]]:
    return store.data.setdefault("snapshots", {})


def view(store: Store, snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot as ``listSnapshots``/job results show it."""
    zone = store.data["zones"][0]
    out = {
        "id": snap["id"],
        "name": snap["name"],
        "volumeid": snap["volumeid"],
        "volumename": snap["volumename"],
        "volumetype": snap["volumetype"],
        "snapshottype": "MANUAL",
        "intervaltype": "MANUAL",
        "state": snap["state"],
        "physicalsize": snap["size"],
        "virtualsize": snap["size"],
        "zoneid": zone["id"],
        "zonename": zone["name"],
        "hypervisor": "KVM",
        "locationtype": "PRIMARY",
        "revertable": True,
        "created": snap["created"],
        "account": "admin",
        "domain": "ROOT",
        "tags": [],
    }
    for job in store.data["jobs"].values():
        if job["jobinstanceid"] == snap["id"] and job["jobstatus"] == 0:
            out.update(jobid=job["jobid"], jobstatus=0)
    return out


def create_snapshot(call: Call, p: Params) -> dict[str, Any]:
    """createSnapshot (async create): volumeid, name."""
    store = call.store
    vol = p.entity(store.data["volumes"], "volumeid")
    if vol["state"] != "Ready":
        raise bad_value(
            f"VolumeId: {vol['id']} is not in Ready state but {vol['state']}. Cannot take snapshot."
        )
    # SnapshotManagerImpl.supportedByHypervisor → hostSupportsSnapsthotForVolume: on KVM, a
    # volume attached to a VM that is neither Stopped nor Destroyed cannot be snapshotted
    # unless kvm.snapshot.enabled (a CloudRuntimeException while the snapshot is allocated)
    vm = store.data["vms"].get(vol.get("virtualmachineid") or "")
    if (
        vm is not None
        and vm["state"] not in ("Stopped", "Destroyed")
        and not store.setting("kvm.snapshot.enabled")
    ):
        raise ApiError(
            INTERNAL_ERROR,
            "KVM Snapshot is not supported for Running VMs. It is disabled by default due to a "
            "possible volume corruption in certain cases. To enable it set global settings "
            "kvm.snapshot.enabled to True. See the documentation for more details.",
            CS_CLOUD_RUNTIME,
        )
    snap_id = new_id()
    stamp = now_text().replace("-", "").replace(":", "").replace("+0000", "")
    _table(store)[snap_id] = {
        "id": snap_id,
        "volumeid": vol["id"],
        "volumename": vol["name"],
        "volumetype": vol["type"],
        # SnapshotVO.diskOfferingId: a volume made from the snapshot gets the same offering
        "diskofferingid": vol.get("diskofferingid"),
        "size": vol["size"],
        "name": p.get("name") or f"{vol['name']}_{stamp}",
        "state": "Creating",
        "created": now_text(),
    }
    jobid = call.job("createSnapshot", "Snapshot", snap_id, {"id": snap_id})
    return {"id": snap_id, "jobid": jobid}


def _finish_create(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    snap = _table(store)[args["id"]]
    if snap["volumeid"] not in store.data["volumes"]:
        raise bad_value(f"Unable to find volume {snap['volumeid']}")
    path = store.snapshot_path(snap["id"])
    path.parent.mkdir(exist_ok=True)
    sparse_copy(store.backing_path(snap["volumeid"]), path)
    snap["state"] = "BackedUp"
    return {"snapshot": view(store, snap)}


def _undo_create(store: Store, args: dict[str, Any]) -> None:
    _table(store).pop(args["id"], None)
    store.snapshot_path(args["id"]).unlink(missing_ok=True)


def list_snapshots(store: Store, p: Params) -> dict[str, Any]:
    """listSnapshots: id, volumeid, name, keyword, paging."""
    table = _table(store)
    items = sorted(table.values(), key=lambda s: s["created"])
    if p.get("id") is not None:
        items = [p.entity(table, "id")]
    for field in ("volumeid", "name"):
        value = p.get(field)
        if value is not None:
            items = [s for s in items if s[field] == value]
    keyword = p.get("keyword")
    if keyword is not None:
        items = [s for s in items if keyword.lower() in s["name"].lower()]
    return page(store, p, "snapshot", [view(store, s) for s in items])


def delete_snapshot(call: Call, p: Params) -> dict[str, Any]:
    """deleteSnapshot (async): id."""
    snap = p.entity(_table(call.store), "id")
    return {"jobid": call.job("deleteSnapshot", "Snapshot", snap["id"], {"id": snap["id"]})}


def _finish_delete(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    if _table(store).pop(args["id"], None) is None:
        raise bad_value(f"Unable to find snapshot {args['id']}")
    store.snapshot_path(args["id"]).unlink(missing_ok=True)
    return {"success": True}


def revert_snapshot(call: Call, p: Params) -> dict[str, Any]:
    """revertSnapshot (async): id."""
    snap = p.entity(_table(call.store), "id")
    return {"jobid": call.job("revertSnapshot", "Snapshot", snap["id"], {"id": snap["id"]})}


def _finish_revert(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    snap = _table(store).get(args["id"])
    if snap is None:
        raise bad_value(f"Unable to find snapshot {args['id']}")
    vol = store.data["volumes"].get(snap["volumeid"])
    if vol is None:
        raise bad_value(
            f"The volume {snap['volumename']} of snapshot {snap['name']} no longer exists"
        )
    # SnapshotManagerImpl.revertSnapshot
    if vol["state"] != "Ready":
        raise bad_value("The volume is not in Ready state.")
    vm = store.data["vms"].get(vol.get("virtualmachineid") or "")
    if vm is not None:
        if vm["state"] != "Stopped":
            raise bad_value(
                "The VM the specified disk is attached to is not in the shutdown state."
            )
        if any(
            s["virtualmachineid"] == vm["id"]
            for s in store.data.setdefault("vm_snapshots", {}).values()
        ):
            raise bad_value(
                "Unable to revert snapshot for VM, please remove VM snapshots before reverting "
                "VM from snapshot"
            )
    sparse_copy(store.snapshot_path(snap["id"]), store.backing_path(vol["id"]))
    return {"snapshot": view(store, snap)}


def register(store: Store, jobs: JobRunner) -> None:
    """Hook the snapshot finishers into the job runner."""
    jobs.register(
        "createSnapshot", lambda a: _finish_create(store, a), lambda a: _undo_create(store, a)
    )
    jobs.register("deleteSnapshot", lambda a: _finish_delete(store, a))
    jobs.register("revertSnapshot", lambda a: _finish_revert(store, a))
