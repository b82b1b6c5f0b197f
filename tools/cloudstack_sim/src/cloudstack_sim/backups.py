"""Backup offerings: listBackupOfferings, assignVirtualMachineToBackupOffering,
removeVirtualMachineFromBackupOffering.

Only the assignment matters to the simulator: a VM with a backup offering can neither attach
volumes nor (unless ``backup.enable.attach.detach.of.volumes``) detach them
(``VolumeApiServiceImpl.checkForDevicesInCopies`` / ``validateIfVmHasBackups``). No backups are
taken. Rules from ``server/src/main/java/org/apache/cloudstack/backup/BackupManagerImpl.java``.
"""

from __future__ import annotations

from typing import Any

from .catalog import filter_items, page
from .errors import bad_value, internal
from .jobs import Call, JobRunner
from .params import Params
from .store import Store


def _offerings(store: Store) -> list[dict[str, Any]]:
    return list(store.data.get("backup_offerings", []))


def _validate_for_zone(store: Store) -> None:
    # BackupManagerImpl.validateForZone: backup.framework.enabled (default false)
    if not store.setting("backup.framework.enabled"):
        raise internal("Backup and Recovery feature is disabled for the zone")


def list_backup_offerings(store: Store, p: Params) -> dict[str, Any]:
    """listBackupOfferings: id, zoneid, keyword."""
    items = filter_items(p, _offerings(store), "id", "zoneid")
    return page(store, p, "backupoffering", items)


def assign(call: Call, p: Params) -> dict[str, Any]:
    """assignVirtualMachineToBackupOffering (async): virtualmachineid, backupofferingid."""
    d = call.store.data
    vm = p.entity(d["vms"], "virtualmachineid")
    offering = p.entity(_offerings(call.store), "backupofferingid")
    args = {"vm": vm["id"], "offering": offering["id"]}
    return {
        "jobid": call.job("assignVirtualMachineToBackupOffering", "VirtualMachine", vm["id"], args)
    }


def _finish_assign(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    _validate_for_zone(store)
    vm = store.data["vms"].get(args["vm"])
    if vm is None:
        raise bad_value(f"Did not find VM by provided ID: {args['vm']}")
    vm["backupofferingid"] = args["offering"]
    return {"success": True}


def remove(call: Call, p: Params) -> dict[str, Any]:
    """removeVirtualMachineFromBackupOffering (async): virtualmachineid, forced."""
    vm = p.entity(call.store.data["vms"], "virtualmachineid")
    p.boolean("forced", False)
    return {
        "jobid": call.job(
            "removeVirtualMachineFromBackupOffering", "VirtualMachine", vm["id"], {"vm": vm["id"]}
        )
    }


def _finish_remove(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    _validate_for_zone(store)
    vm = store.data["vms"].get(args["vm"])
    if vm is None:
        raise bad_value(f"Did not find VM by provided ID: {args['vm']}")
    vm.pop("backupofferingid", None)
    return {"success": True}


def register(store: Store, jobs: JobRunner) -> None:
    """Hook the backup finishers into the job runner."""
    jobs.register("assignVirtualMachineToBackupOffering", lambda a: _finish_assign(store, a))
    jobs.register("removeVirtualMachineFromBackupOffering", lambda a: _finish_remove(store, a))
