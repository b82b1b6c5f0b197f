"""Command dispatch: authentication, faults, latency, sync and async commands."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from . import backups, catalog, snapshots, vms, vmsnapshots, volumes
from .errors import BAD_CREDENTIALS, UNAUTHORIZED, ApiError
from .faults import FaultTable
from .jobs import Call, JobRunner
from .params import Params
from .signing import verify
from .store import Store

SyncHandler = Callable[[Store, Params], dict[str, Any]]
AsyncHandler = Callable[[Call, Params], dict[str, Any]]

SYNC: dict[str, SyncHandler] = {
    "listZones": catalog.list_zones,
    "listServiceOfferings": catalog.list_service_offerings,
    "listDiskOfferings": catalog.list_disk_offerings,
    "listNetworks": catalog.list_networks,
    "listTemplates": catalog.list_templates,
    "listVolumes": volumes.list_volumes,
    "deleteVolume": volumes.delete_volume,
    "listVirtualMachines": vms.list_vms,
    "queryAsyncJobResult": catalog.query_async_job_result,
    "listAsyncJobs": catalog.list_async_jobs,
    "listSnapshots": snapshots.list_snapshots,
    "listOsTypes": catalog.list_os_types,
    "listVMSnapshot": vmsnapshots.list_vm_snapshots,
    "listBackupOfferings": backups.list_backup_offerings,
}
ASYNC: dict[str, AsyncHandler] = {
    "createVolume": volumes.create_volume,
    "attachVolume": volumes.attach_volume,
    "detachVolume": volumes.detach_volume,
    "deployVirtualMachine": vms.deploy_vm,
    "startVirtualMachine": vms.start_vm,
    "stopVirtualMachine": vms.stop_vm,
    "destroyVirtualMachine": vms.destroy_vm,
    "createSnapshot": snapshots.create_snapshot,
    "deleteSnapshot": snapshots.delete_snapshot,
    "revertSnapshot": snapshots.revert_snapshot,
    "createVMSnapshot": vmsnapshots.create_vm_snapshot,
    "deleteVMSnapshot": vmsnapshots.delete_vm_snapshot,
    "assignVirtualMachineToBackupOffering": backups.assign,
    "removeVirtualMachineFromBackupOffering": backups.remove,
}
COMMANDS = {name.lower(): name for name in (*SYNC, *ASYNC)}


class Api:
    """Answers one signed API request: ``(http status, response dict)``."""

    def __init__(self, store: Store, faults: FaultTable, api_key: str, secret_key: str) -> None:
        self.store = store
        self.faults = faults
        self.api_key = api_key
        self.secret_key = secret_key
        self.jobs = JobRunner(store)
        volumes.register(store, self.jobs)
        vms.register(store, self.jobs)
        snapshots.register(store, self.jobs)
        vmsnapshots.register(store, self.jobs)
        backups.register(store, self.jobs)

    def handle(self, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Authenticate, dispatch, and wrap the answer in ``<command>response``."""
        raw_command = next((v for k, v in params.items() if k.lower() == "command"), "")
        key = f"{raw_command.lower()}response"
        command = COMMANDS.get(raw_command.lower())
        try:
            # like ApiServer.verifyRequest: unknown commands are rejected before the signature
            if command is None or not verify(params, self.api_key, self.secret_key):
                raise ApiError(UNAUTHORIZED, BAD_CREDENTIALS)
            return 200, {key: self._dispatch(command, Params(command, params))}
        except ApiError as exc:
            return exc.errorcode, {key: exc.body()}

    def _dispatch(self, command: str, p: Params) -> dict[str, Any]:
        delay, fault = self.faults.take(command)
        self.jobs.settle()
        if command in SYNC:
            if delay:
                time.sleep(delay)
            if fault is not None:
                raise ApiError(fault.errorcode or 530, fault.text())
            with self.store.lock:
                return SYNC[command](self.store, p)
        with self.store.lock:
            result = ASYNC[command](Call(self.store, self.jobs, delay, fault), p)
            self.store.save()
            return result
