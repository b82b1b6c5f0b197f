"""Power state, power on, and power off with a real graceful wait before forcing."""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim, vmodl

from vma.errors import PowerOffError, VmwareError
from vma.vmware.faults import fault_text
from vma.vmware.properties import retrieve_one
from vma.vmware.tasks import wait_for_task

ON = "poweredOn"
OFF = "poweredOff"
SUSPENDED = "suspended"


def power_state(si: vim.ServiceInstance, vm: vim.VirtualMachine) -> str:
    """``poweredOn`` | ``poweredOff`` | ``suspended``."""
    return str(retrieve_one(si, vm, ["runtime.powerState"]).get("runtime.powerState"))


def power_on(
    si: vim.ServiceInstance, vm: vim.VirtualMachine, *, vm_id: str, task_timeout_s: float
) -> None:
    """Power the VM on (no-op when it is on already)."""
    if power_state(si, vm) == ON:
        return
    wait_for_task(si, vm.PowerOnVM_Task(), action="power on", vm_id=vm_id, timeout_s=task_timeout_s)


def _wait_off(
    si: vim.ServiceInstance, vm: vim.VirtualMachine, deadline: float, poll_s: float
) -> bool:
    while True:
        if power_state(si, vm) == OFF:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(poll_s, remaining))


def power_off(
    si: vim.ServiceInstance,
    vm: vim.VirtualMachine,
    *,
    vm_id: str,
    graceful: bool,
    timeout_s: float,
    force_after_timeout: bool,
    task_timeout_s: float,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """Power the VM off; see ``VSphereClient.power_off``."""
    started = time.monotonic()

    def seconds() -> float:
        return round(time.monotonic() - started, 3)

    state = power_state(si, vm)
    if state == OFF:
        return {"method": "already_off", "seconds": 0.0}
    reason = None
    if graceful:
        if state == SUSPENDED:
            reason = "the VM is suspended; its guest cannot shut down"
        else:
            try:
                vm.ShutdownGuest()
            except vim.fault.InvalidPowerState:
                if power_state(si, vm) == OFF:
                    return {"method": "already_off", "seconds": seconds()}
                raise
            except vmodl.MethodFault as exc:  # ToolsUnavailable, TaskInProgress, …
                reason = f"guest shutdown refused: {fault_text(exc)}"
            else:
                if _wait_off(si, vm, started + timeout_s, poll_s):
                    return {"method": "graceful", "seconds": seconds()}
                reason = f"guest still running {timeout_s:g} s after the shutdown request"
        if not force_after_timeout:
            raise PowerOffError(f"power off: {reason} (forcing not allowed)", vm_id=vm_id)
    try:
        wait_for_task(
            si, vm.PowerOffVM_Task(), action="power off", vm_id=vm_id, timeout_s=task_timeout_s
        )
    except VmwareError as exc:
        if isinstance(exc.__cause__, vim.fault.InvalidPowerState) and power_state(si, vm) == OFF:
            return {"method": "already_off", "seconds": seconds()}
        raise
    result: dict[str, Any] = {"method": "forced", "seconds": seconds()}
    if reason:
        result["reason"] = reason
    return result
