"""Errors raised by the VMA services.

::

    VmaError                        base of everything the VMA raises
    ├── VmwareError                 vCenter refused or failed an operation (carries vm_id)
    │   ├── VmwareConnectionError   vCenter unreachable or login refused
    │   ├── VmNotFoundError         no VM with that id
    │   ├── VcenterNotConfiguredError  no vCenter configured or remembered
    │   ├── SnapshotNotFoundError   the VM has no snapshot with that id
    │   ├── PowerOffError           graceful power-off failed and forcing was not allowed
    │   └── ChangeIdError           a change ID cannot be used (CBT reset or off): full copy
    ├── SourceError                 a disk source (lab qcow2/qemu-nbd, or VDDK) failed
    └── JobError                    a replication job cannot be started, stopped or found
        ├── JobNotFoundError        no job with that id
        ├── JobConflictError        job id reused with other content / VM already busy
        └── JobRequestError         the request names a missing VM part (carries field)
            └── UnknownDiskError    a progress update for a disk not in the job

Add classes here (one-line docstring each, subclassing the nearest parent); never elsewhere.
"""

from __future__ import annotations


class VmaError(Exception):
    """Base class of every VMA error."""


class VmwareError(VmaError):
    """vCenter refused or failed an operation."""

    def __init__(self, message: str, *, vm_id: str | None = None) -> None:
        super().__init__(message)
        self.vm_id = vm_id


class VmwareConnectionError(VmwareError):
    """vCenter could not be reached or refused the login."""


class VmwareLoginError(VmwareConnectionError):
    """A vCenter answered and refused the username or password."""


class VmNotFoundError(VmwareError):
    """No VM with the requested id exists in vCenter."""


class SourceError(VmaError):
    """A disk source failed (image missing, qemu-nbd did not start, bitmap unusable)."""


class JobError(VmaError):
    """A replication job cannot be started, stopped or found."""


class JobNotFoundError(JobError):
    """No job with that id."""


class VcenterNotConfiguredError(VmwareError):
    """No vCenter is configured and none was remembered from POST /discover."""


class JobConflictError(JobError):
    """The job id exists with other content, or the VM already has an active job."""


class JobRequestError(JobError):
    """A replicate request names something that does not exist (``field`` says what)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownDiskError(JobRequestError):
    """A progress update names a disk key that is not part of the job."""


class SnapshotNotFoundError(VmwareError):
    """The VM has no snapshot with the requested id."""


class PowerOffError(VmwareError):
    """A graceful power-off was refused or timed out and forcing was not allowed."""


class ChangeIdError(VmwareError):
    """A previous change ID is unusable (CBT was reset or is off); a full copy is needed."""
