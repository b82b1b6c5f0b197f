"""Async jobs: created by async commands, finished in the background, queried by id.

A job is due ``delay`` seconds after it was created (0 by default: it finishes right after
its command answered, so the first ``queryAsyncJobResult`` usually sees it done). When it is
due its *finisher* runs under the store lock: it re-checks the state rules, applies the change
and returns the ``jobresult``; an :class:`ApiError` from the finisher, or an injected fault,
fails the job (``jobstatus 2``) and runs the command's *undo* (e.g. a failed createVolume
removes the volume it announced).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import views
from .errors import INTERNAL_ERROR, ApiError
from .faults import Fault
from .store import Store, new_id, now_text

Finisher = Callable[[dict[str, Any]], dict[str, Any]]
Undo = Callable[[dict[str, Any]], None]

_PKG = "org.apache.cloudstack.api.command.user"
JAVA_CMD = {
    "createVolume": f"{_PKG}.volume.CreateVolumeCmd",
    "attachVolume": f"{_PKG}.volume.AttachVolumeCmd",
    "detachVolume": f"{_PKG}.volume.DetachVolumeCmd",
    "deployVirtualMachine": f"{_PKG}.vm.DeployVMCmd",
    "startVirtualMachine": f"{_PKG}.vm.StartVMCmd",
    "stopVirtualMachine": f"{_PKG}.vm.StopVMCmd",
    "destroyVirtualMachine": f"{_PKG}.vm.DestroyVMCmd",
    "createSnapshot": f"{_PKG}.snapshot.CreateSnapshotCmd",
    "deleteSnapshot": f"{_PKG}.snapshot.DeleteSnapshotCmd",
    "revertSnapshot": f"{_PKG}.snapshot.RevertSnapshotCmd",
    "createVMSnapshot": f"{_PKG}.vmsnapshot.CreateVMSnapshotCmd",
    "deleteVMSnapshot": f"{_PKG}.vmsnapshot.DeleteVMSnapshotCmd",
    "assignVirtualMachineToBackupOffering": (
        f"{_PKG}.backup.AssignVirtualMachineToBackupOfferingCmd"
    ),
    "removeVirtualMachineFromBackupOffering": (
        f"{_PKG}.backup.RemoveVirtualMachineFromBackupOfferingCmd"
    ),
}
ACCOUNT_ID = "6c5e4f4e-0000-4000-8000-00000000acc1"
USER_ID = "6c5e4f4e-0000-4000-8000-00000000a5e1"


class JobRunner:
    """Creates jobs and finishes the due ones (called before each request and by a timer)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.finishers: dict[str, Finisher] = {}
        self.undos: dict[str, Undo] = {}

    def register(self, command: str, finisher: Finisher, undo: Undo | None = None) -> None:
        """Declare how the async ``command``'s job completes (and unwinds on failure)."""
        self.finishers[command] = finisher
        if undo is not None:
            self.undos[command] = undo

    def create(
        self,
        command: str,
        instancetype: str,
        instanceid: str,
        args: dict[str, Any],
        delay: float,
        fault: Fault | None,
    ) -> str:
        """Record a pending job; return its id. Caller holds the store lock."""
        jobid = new_id()
        self.store.data["jobs"][jobid] = {
            "jobid": jobid,
            "accountid": ACCOUNT_ID,
            "userid": USER_ID,
            "cmd": JAVA_CMD[command],
            "command": command,
            "args": args,
            "jobstatus": 0,
            "jobprocstatus": 0,
            "jobresultcode": 0,
            "jobinstancetype": instancetype,
            "jobinstanceid": instanceid,
            "created": now_text(),
            "ready_at": time.time() + delay,
            "fault": None
            if fault is None
            else {"errorcode": fault.errorcode, "errortext": fault.text()},
        }
        self.store.save()
        return jobid

    def settle(self) -> None:
        """Finish every due pending job, oldest first."""
        with self.store.lock:
            now = time.time()
            due = sorted(
                (
                    j
                    for j in self.store.data["jobs"].values()
                    if j["jobstatus"] == 0 and j["ready_at"] <= now
                ),
                key=lambda j: j["ready_at"],
            )
            for job in due:
                self._finish(job)
            if due:
                self.store.save()

    def _finish(self, job: dict[str, Any]) -> None:
        command = job["command"]
        try:
            if job["fault"]:
                raise ApiError(
                    job["fault"]["errorcode"] or INTERNAL_ERROR, job["fault"]["errortext"]
                )
            job["jobstatus"] = 1  # no longer pending: results must not show the jobid marker
            result = self.finishers[command](job["args"])
        except ApiError as exc:
            undo = self.undos.get(command)
            if undo is not None:
                undo(job["args"])
            job.update(
                jobstatus=2,
                jobresultcode=exc.errorcode,
                jobresult={"errorcode": exc.errorcode, "errortext": exc.errortext},
            )
        else:
            job.update(jobstatus=1, jobresultcode=0, jobresult=result)
        job["completed"] = now_text()

    def view(self, jobid: str) -> dict[str, Any] | None:
        """The job as ``queryAsyncJobResult`` answers it (None when unknown)."""
        job = self.store.data["jobs"].get(jobid)
        return None if job is None else views.job(job)


class Call:
    """What an async command handler needs: state, the job runner, delay and fault."""

    def __init__(self, store: Store, jobs: JobRunner, delay: float, fault: Fault | None) -> None:
        self.store = store
        self.jobs = jobs
        self.delay = delay
        self.fault = fault

    def job(
        self,
        command: str,
        instancetype: str,
        instanceid: str,
        args: dict[str, Any],
        extra_delay: float = 0.0,
    ) -> str:
        """Create the command's job with this call's latency (plus ``extra_delay``) and fault."""
        return self.jobs.create(
            command, instancetype, instanceid, args, self.delay + extra_delay, self.fault
        )
