"""Translate pyVmomi faults and socket errors into the VMA's error tree, at one edge."""

from __future__ import annotations

import contextlib
import http.client
import ssl
from collections.abc import Iterator

from pyVmomi import vim, vmodl

from vma.errors import VmNotFoundError, VmwareConnectionError, VmwareError, VmwareLoginError

#: Network-level failures: vCenter unreachable, connection dropped, TLS refused.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    http.client.HTTPException,
    ssl.SSLError,
)


def fault_text(fault: BaseException) -> str:
    """A one-line description of a vSphere fault (its type name and message)."""
    name = type(fault).__name__
    if isinstance(fault, vmodl.MethodFault):
        msg = getattr(fault, "msg", None) or ""
        prop = getattr(fault, "invalidProperty", None)
        details = [m for m in (msg, f"invalid property {prop}" if prop else "") if m]
        fault_type = getattr(fault, "_wsdlName", name)
        return f"{fault_type}: {'; '.join(details)}" if details else fault_type
    return f"{name}: {fault}" if str(fault) else name


@contextlib.contextmanager
def vsphere_errors(action: str, *, vm_id: str | None = None, where: str = "") -> Iterator[None]:
    """Run a block of pyVmomi calls; re-raise anything they raise as a ``VmwareError``.

    ``action`` names what was attempted ("discover", "create snapshot"…); ``where`` is the
    vCenter's host:port for connection messages. Never includes credentials.
    """
    try:
        yield
    except VmwareError:
        raise
    except vim.fault.InvalidLogin as exc:
        raise VmwareLoginError(
            f"vCenter {where} refused the login (wrong username or password)", vm_id=vm_id
        ) from exc
    except vim.fault.NotAuthenticated as exc:
        raise VmwareConnectionError(
            f"{action}: the vCenter session is no longer authenticated", vm_id=vm_id
        ) from exc
    except vmodl.fault.ManagedObjectNotFound as exc:
        if vm_id is not None:
            raise VmNotFoundError(f"VM {vm_id} not found (it was removed)", vm_id=vm_id) from exc
        raise VmwareError(f"{action}: {fault_text(exc)}") from exc
    except vmodl.MethodFault as exc:
        raise VmwareError(f"{action}: {fault_text(exc)}", vm_id=vm_id) from exc
    except TRANSPORT_ERRORS as exc:
        raise VmwareConnectionError(
            f"{action}: vCenter {where} unreachable: {fault_text(exc)}", vm_id=vm_id
        ) from exc
