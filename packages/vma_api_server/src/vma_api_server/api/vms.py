"""vCenter: discovery, one VM, power state and operations, change tracking (CBT)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from migration_common import canonical_vm_id, get_logger
from vma.errors import VmwareConnectionError, VmwareLoginError
from vma.services.vcenter import VcenterCredentials

from ..errors import ApiError
from ..schemas import DiscoverIn, EmptyIn, PowerOffIn, json_body
from ._services import services

bp = Blueprint("vms", __name__)
log = get_logger(__name__)


@bp.url_value_preprocessor
def _canonical_vm_id(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Every ``/vms/{vm_id}`` route sees the canonical id (a UUID in lower case); an id with a
    control character is a 400 naming ``vm_id``."""
    if values and "vm_id" in values:
        try:
            values["vm_id"] = canonical_vm_id(values["vm_id"])
        except ValueError as exc:
            raise ApiError("invalid_field", f"vm_id: {exc}", 400, "vm_id") from None


@bp.post("/discover")
def discover() -> dict[str, Any]:
    """All VMs of the vCenter in the body; remembers the credentials when none is configured."""
    body = json_body(DiscoverIn)
    try:
        creds = VcenterCredentials.from_address(
            body.vcenter,
            body.username,
            body.password,
            insecure=body.insecure,
            datacenter=body.datacenter,
        )
    except ValueError as exc:
        raise ApiError("invalid_field", f"vcenter: {exc}", 422, "vcenter") from None
    provider = services().vcenter
    try:
        with provider.client(creds) as vc:
            vms = vc.discover()
    except VmwareLoginError:  # a vCenter answered: saying so tells nothing of other ports
        raise
    except VmwareConnectionError as exc:
        # The address comes from the caller: one answer whatever is (or is not) listening
        # there, so discovery cannot tell closed, plain HTTP and TLS ports apart. The cause
        # goes to the VMA's log for its operator.
        where = f"{creds.host}:{creds.port}"
        log.warning("discovery could not reach a vCenter", vcenter=where, cause=str(exc))
        raise VmwareConnectionError(
            f"no vCenter SDK answered at {where} (unreachable, not a vCenter, or a "
            "certificate the VMA does not trust); the VMA log has the cause"
        ) from None
    provider.remember(creds)
    return {"vms": vms}


@bp.get("/vms/<vm_id>")
def get_vm(vm_id: str) -> dict[str, Any]:
    """One VM's inventory record (disks, NICs, firmware…)."""
    with services().vcenter.client() as vc:
        return vc.get_vm(vm_id)


@bp.get("/vms/<vm_id>/power")
def power(vm_id: str) -> dict[str, Any]:
    """``{"vm_id", "power_state"}``."""
    with services().vcenter.client() as vc:
        return {"vm_id": vm_id, "power_state": vc.power_state(vm_id)}


@bp.post("/vms/<vm_id>/power-off")
def power_off(vm_id: str) -> dict[str, Any]:
    """Graceful shutdown with a real wait up to ``timeout_s``, then forced if ``force``."""
    body = json_body(PowerOffIn, optional=True)
    timeout = (
        body.timeout_s if body.timeout_s is not None else (services().settings["POWER_OFF_TIMEOUT"])
    )
    with services().vcenter.client() as vc:
        result = vc.power_off(
            vm_id, graceful=body.graceful, timeout_s=float(timeout), force_after_timeout=body.force
        )
        state = vc.power_state(vm_id)
    return {"vm_id": vm_id, "power_state": state, **result}


@bp.post("/vms/<vm_id>/power-on")
def power_on(vm_id: str) -> dict[str, Any]:
    """Power the VM on."""
    json_body(EmptyIn, optional=True)
    with services().vcenter.client() as vc:
        vc.power_on(vm_id)
        return {"vm_id": vm_id, "power_state": vc.power_state(vm_id)}


@bp.get("/vms/<vm_id>/cbt")
def cbt(vm_id: str) -> dict[str, Any]:
    """``{"vm_id", "enabled", "supported"}``."""
    with services().vcenter.client() as vc:
        return {"vm_id": vm_id, **vc.cbt_status(vm_id)}


@bp.post("/vms/<vm_id>/cbt/enable")
def enable_cbt(vm_id: str) -> dict[str, Any]:
    """Enable change tracking; answers the new status."""
    json_body(EmptyIn, optional=True)
    with services().vcenter.client() as vc:
        return {"vm_id": vm_id, **vc.enable_cbt(vm_id)}
