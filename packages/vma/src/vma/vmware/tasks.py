"""Wait for vSphere tasks by reading their state through the PropertyCollector."""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim

from vma.errors import VmwareError
from vma.vmware.faults import fault_text
from vma.vmware.properties import retrieve_one

#: Default upper bound for one task (snapshot removal of a large disk can take a while).
DEFAULT_TASK_TIMEOUT_S = 3600.0


def wait_for_task(
    si: vim.ServiceInstance,
    task: vim.Task,
    *,
    action: str,
    vm_id: str | None = None,
    timeout_s: float = DEFAULT_TASK_TIMEOUT_S,
) -> Any:
    """Wait until ``task`` succeeds and return its result; raise ``VmwareError`` otherwise.

    A failed task raises with the task's fault text; a task still running after ``timeout_s``
    raises too (the task itself keeps running in vCenter).
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        info = retrieve_one(si, task, ["info.state", "info.error", "info.result"])
        state = info.get("info.state")
        if state == vim.TaskInfo.State.success:
            return info.get("info.result")
        if state == vim.TaskInfo.State.error:
            error = info.get("info.error")
            text = fault_text(error) if error is not None else "unknown error"
            failure = VmwareError(f"{action} failed: {text}", vm_id=vm_id)
            if isinstance(error, BaseException):
                raise failure from error
            raise failure
        if time.monotonic() >= deadline:
            raise VmwareError(
                f"{action}: task {task._moId} still {state} after {timeout_s:.0f} s", vm_id=vm_id
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
