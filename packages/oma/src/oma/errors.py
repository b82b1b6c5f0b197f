"""Errors raised by the OMA.

::

    OmaError                        base of everything the OMA raises
    ├── CloudStackError             CloudStack answered an error (errorcode, errortext, command)
    │   ├── CloudStackUnreachable   no answer from the CloudStack endpoint
    │   └── OfferingMismatch        an offering cannot serve the request
    ├── DeviceNotFoundError         an attached volume's /dev/disk/by-id entry never appeared
    ├── NbdExportError              a qemu-nbd export could not be started or stopped
    ├── VmaClientError              the VMA refused or failed a call
    │   └── VmaUnreachable          no answer from the VMA
    ├── WorkflowError               a workflow step failed (carries the step name)
    ├── NotFoundError               a requested row does not exist (API: 404)
    ├── ConflictError               a uniqueness rule or an active job/failover refused it (409)
    ├── InvalidStateError           the row's state does not allow the operation (409)
    └── SecretsError                a stored secret cannot be encrypted or decrypted

Add classes here (one-line docstring each, subclassing the nearest parent); never elsewhere.
"""

from __future__ import annotations


class OmaError(Exception):
    """Base class of every OMA error."""


class CloudStackError(OmaError):
    """CloudStack answered with an error; carries its errorcode and errortext."""

    def __init__(
        self, errortext: str, *, errorcode: int | None = None, command: str | None = None
    ) -> None:
        code = f" {errorcode}" if errorcode is not None else ""
        where = f" ({command})" if command else ""
        super().__init__(f"CloudStack error{code}{where}: {errortext}")
        self.errortext = errortext
        self.errorcode = errorcode
        self.command = command


class CloudStackUnreachable(CloudStackError):
    """The CloudStack endpoint did not answer (connection refused, reset, timeout)."""


class OfferingMismatch(CloudStackError):
    """A CloudStack offering cannot serve the request; found before CloudStack is asked."""


class DeviceNotFoundError(OmaError):
    """An attached volume's block device did not appear in the by-id directory in time."""


class NbdExportError(OmaError):
    """A qemu-nbd export could not be started, found or stopped."""


class VmaClientError(OmaError):
    """The VMA refused or failed a call."""


class WorkflowError(OmaError):
    """A workflow step failed; ``step`` names it."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step


class VmaUnreachable(VmaClientError):
    """The VMA did not answer at all (connection refused, reset, timeout)."""


class NotFoundError(OmaError):
    """A requested row (job, context, appliance, target, credential) does not exist."""

    def __init__(self, message: str, *, kind: str | None = None, id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.id = id


class ConflictError(OmaError):
    """A uniqueness rule or an active job, failover or rollback refused a change (409)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidStateError(OmaError):
    """The row is in a state that does not allow the operation (e.g. delete an active job)."""


class SecretsError(OmaError):
    """A stored secret could not be encrypted or decrypted (wrong or invalid OMA_SECRET_KEY)."""
