"""Discovery (proxied to a VMA) and "add to management" (creates vm_contexts + vm_disks)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..database import database
from ..database.models import VmaAppliance
from ..database.repos import appliances, contexts, credentials
from ..errors import ConflictError
from ._context import box, config
from .errors import ApiError, invalid
from .schemas import DISCOVER, DISCOVERY_ADD, body
from .serialize import context
from .validation import boolean, json_body, no_unknown, secret, string, vm_id

bp = Blueprint("discovery", __name__, url_prefix="/api/v1/discovery")

FIELDS = ("vma_id", "credential_id", "vcenter", "username", "password", "datacenter", "insecure")


def _vma(data: dict[str, Any]) -> VmaAppliance:
    vma_id = string(data, "vma_id", required=False)
    if vma_id:
        return appliances.get_appliance(vma_id)
    rows = appliances.list_appliances()
    if len(rows) != 1:
        raise invalid("vma_id", "is required" if rows else "no VMA is registered yet")
    return rows[0]


def _login(data: dict[str, Any]) -> dict[str, Any]:
    """vCenter, username, password, datacenter, insecure and credential id for the request."""
    credential_id = string(data, "credential_id", required=False)
    if credential_id or not data.get("username"):
        row = (
            credentials.get_credential(credential_id)
            if credential_id
            else credentials.default_credential()
        )
        if row is None:
            raise invalid("credential_id", "is required (or vcenter, username and password)")
        return {
            "vcenter": row.vcenter,
            "username": row.username,
            "password": box().decrypt(row.password_encrypted),
            "datacenter": string(data, "datacenter", required=False) or row.datacenter,
            "insecure": row.insecure,
            "credential_id": row.id,
        }
    return {
        "vcenter": string(data, "vcenter"),
        "username": string(data, "username"),
        "password": secret(data, "password"),
        "datacenter": string(data, "datacenter", required=False),
        "insecure": boolean(data, "insecure"),
        "credential_id": None,
    }


def _discover(vma: VmaAppliance, login: dict[str, Any]) -> list[dict[str, Any]]:
    from ..vma_client import VmaClient

    token = box().decrypt(vma.token_encrypted)
    with VmaClient.for_appliance(vma, token, config(), retries=0) as client:
        # The VMA call may take a while; do not hold a database connection meanwhile.
        database.close()
        try:
            return client.discover(
                login["vcenter"],
                login["username"],
                login["password"],
                datacenter=login["datacenter"],
                insecure=login["insecure"],
            )
        finally:
            database.connect(reuse_if_open=True)


def _canonical_ids(vms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The VMA's VMs with their ids in canonical form (as the OMA stores and compares them)."""
    from migration_common import canonical_vm_id

    for vm in vms:
        try:
            vm["id"] = canonical_vm_id(vm.get("id"))
        except ValueError:
            continue  # refused with its field name if someone tries to add it
    return vms


def _managed(vcenter: str) -> dict[str, str]:
    from ..database.models import VmContext

    rows = VmContext.select(VmContext.vm_id, VmContext.id).where(VmContext.vcenter == vcenter)
    return {r.vm_id: r.id for r in rows}


@bp.post("")
@body(DISCOVER)
def discover() -> Any:
    """List a vCenter's VMs through a VMA: ``{"vma_id"?, "credential_id"? | "vcenter",
    "username", "password", "datacenter"?, "insecure"?}`` → ``{"vms": [...]}`` with
    ``vm_context_id`` set on VMs already managed."""
    data = json_body()
    no_unknown(data, FIELDS)
    vma = _vma(data)
    login = _login(data)
    vms = _canonical_ids(_discover(vma, login))
    managed = _managed(login["vcenter"])
    for vm in vms:
        vm["vm_context_id"] = managed.get(str(vm.get("id")))
    return jsonify({"vma_id": vma.id, "vcenter": login["vcenter"], "vms": vms})


def _validate_vm(vm: Any, index: int) -> tuple[str, str, list[dict[str, Any]]]:
    where = f"vms[{index}]"
    if not isinstance(vm, dict):
        raise invalid(where, "must be an object (a VM as returned by discovery)")
    if vm.get("id") is None:
        raise invalid(f"{where}.id", "is required")
    canonical, name = vm_id(vm["id"], f"{where}.id"), vm.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"{where}.name", "is required")
    try:
        disks = contexts.disk_rows_from_vm(vm)
    except ValueError as exc:
        raise invalid(f"{where}.{str(exc).split(' ', 1)[0]}", str(exc).split(" ", 1)[1]) from None
    if not disks:
        raise invalid(f"{where}.disks", "must list at least one disk")
    return canonical, name, disks


@bp.post("/add")
@body(DISCOVERY_ADD)
def add() -> Any:
    """Add VMs to management: ``{"vma_id"?, "credential_id"?, "vcenter"?, "vms": [VM...]}``
    or ``{..., "vm_ids": [...]}`` (discovered again through the VMA). Creates one vm_context
    with its disks per VM; VMs already managed are reported under ``skipped``. → 201."""
    data = json_body()
    no_unknown(data, (*FIELDS, "vms", "vm_ids", "cloudstack_target_id"))
    vma = _vma(data)
    target_id = string(data, "cloudstack_target_id", required=False)
    if target_id:
        from ..database.repos import targets

        targets.get_target(target_id)
    if "vms" in data:
        vms = data["vms"]
        if not isinstance(vms, list) or not vms:
            raise invalid("vms", "must be a non-empty list")
        credential_id = string(data, "credential_id", required=False)
        if credential_id:
            row = credentials.get_credential(credential_id)
            vcenter = string(data, "vcenter", required=False) or row.vcenter
        else:
            row = credentials.default_credential()
            vcenter = string(data, "vcenter", required=row is None) or (
                row.vcenter if row else None
            )
            credential_id = row.id if row else None
    elif "vm_ids" in data:
        given = data["vm_ids"]
        if not isinstance(given, list) or not given:
            raise invalid("vm_ids", "must be a non-empty list of VM ids")
        wanted = list(dict.fromkeys(vm_id(v, f"vm_ids[{i}]") for i, v in enumerate(given)))
        login = _login(data)
        found = {vm.get("id"): vm for vm in _canonical_ids(_discover(vma, login))}
        missing = [v for v in wanted if v not in found]
        if missing:
            raise ApiError(
                "not_found",
                f"VMs not found in {login['vcenter']}: {', '.join(missing)}",
                404,
                "vm_ids",
            )
        vms = [found[v] for v in wanted]
        vcenter, credential_id = login["vcenter"], login["credential_id"]
    else:
        raise invalid("vms", "is required (or vm_ids)")
    parsed = [_validate_vm(vm, i) for i, vm in enumerate(vms)]
    added, skipped = [], []
    for (canonical, name, disks), vm in zip(parsed, vms, strict=True):
        spec = {k: v for k, v in vm.items() if k != "vm_context_id"} | {"id": canonical}
        try:
            ctx = contexts.create_context(
                vcenter=vcenter,
                vm_id=canonical,
                name=name,
                vma_id=vma.id,
                credential_id=credential_id,
                target_id=target_id,
                path=vm.get("path"),
                spec=spec,
                disks=disks,
            )
        except ConflictError:
            existing = contexts.find_context(vcenter=vcenter, vm_id=canonical)
            skipped.append(
                {
                    "vm_id": canonical,
                    "name": name,
                    "reason": "already managed",
                    "vm_context_id": existing.id if existing else None,
                }
            )
            continue
        added.append(context(ctx))
    return jsonify({"added": added, "skipped": skipped}), 201
