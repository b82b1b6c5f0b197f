"""Discovery (proxied to a VMA) and "add to management" (creates vm_contexts + vm_disks)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..database import database
from ..database.models import VmaAppliance
from ..database.repos import appliances, contexts, credentials
from ..errors import ConflictError
from ._context import box, config
from .errors import ApiError
from .requests import (
    Body,
    Id,
    Line,
    Secret,
    Text,
    VmId,
    body,
    int_between,
    optional,
    unprocessable,
)
from .serialize import context
from .validation import vm_id

bp = Blueprint("discovery", __name__, url_prefix="/api/v1/discovery")


class Login(Body):
    """Which VMA asks which vCenter: a saved login (``credential_id``, else the default one)
    or ``vcenter`` + ``username`` + ``password``."""

    vma_id: Id = Field(None, description="needed when more than one VMA is registered")  # type: ignore[assignment]
    credential_id: Id = None  # type: ignore[assignment]
    vcenter: Line = Field(None, description="host or host:port")  # type: ignore[assignment]
    username: Line = None  # type: ignore[assignment]
    password: Secret = None  # type: ignore[assignment]
    datacenter: optional(Line) = None
    insecure: bool = False


class DiscoveredDisk(BaseModel):
    """A disk of a discovered VM: its key (``disk_key``, ``key`` or ``id`` as ``disk-2000``)
    and size; its other fields are kept."""

    model_config = ConfigDict(extra="allow", regex_engine="python-re")

    capacity_bytes: int_between(1, 1 << 62)


class DiscoveredVm(BaseModel):
    """A VM as discovery lists it (its other fields are kept as its spec)."""

    model_config = ConfigDict(extra="allow", regex_engine="python-re")

    id: VmId
    name: Line
    path: optional(Text) = None
    disks: list[DiscoveredDisk] = Field(min_length=1, max_length=256)


class DiscoveryAdd(Login):
    """``POST /discovery/add``: ``vms`` (as discovery listed them) or ``vm_ids`` (discovered
    again through the VMA), one of them."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["vms"]}, {"required": ["vm_ids"]}]}
    )

    cloudstack_target_id: optional(Id) = None
    vms: list[DiscoveredVm] = Field(None, min_length=1, max_length=1000)  # type: ignore[assignment]
    vm_ids: list[VmId] = Field(None, min_length=1, max_length=1000)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one_list(self) -> DiscoveryAdd:
        if ("vms" in self.given()) == ("vm_ids" in self.given()):
            raise ValueError("vms: give vms (as discovery listed them) or vm_ids, one of them")
        return self


def _vma(data: Login) -> VmaAppliance:
    if data.vma_id:
        return appliances.get_appliance(data.vma_id.strip())
    rows = appliances.list_appliances()
    if len(rows) != 1:
        raise unprocessable(
            "vma_id", "is required (more than one VMA)" if rows else "no VMA is registered yet"
        )
    return rows[0]


def _login(data: Login) -> dict[str, Any]:
    """vCenter, username, password, datacenter, insecure and credential id for the request."""
    datacenter = data.datacenter.strip() if data.datacenter else None
    if data.credential_id or not data.username:
        row = (
            credentials.get_credential(data.credential_id.strip())
            if data.credential_id
            else credentials.default_credential()
        )
        if row is None:
            raise unprocessable("credential_id", "is required (or vcenter, username and password)")
        return {
            "vcenter": row.vcenter,
            "username": row.username,
            "password": box().decrypt(row.password_encrypted),
            "datacenter": datacenter or row.datacenter,
            "insecure": row.insecure,
            "credential_id": row.id,
        }
    for name in ("vcenter", "password"):
        if getattr(data, name) is None:
            raise unprocessable(name, "is required with username (or use credential_id)")
    return {
        "vcenter": data.vcenter.strip(),
        "username": data.username.strip(),
        "password": data.password,
        "datacenter": datacenter,
        "insecure": data.insecure,
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
@body(Login)
def discover() -> Any:
    """List a vCenter's VMs through a VMA: ``{"vma_id"?, "credential_id"? | "vcenter",
    "username", "password", "datacenter"?, "insecure"?}`` → ``{"vms": [...]}`` with
    ``vm_context_id`` set on VMs already managed."""
    data: Login = g.body
    vma = _vma(data)
    login = _login(data)
    vms = _canonical_ids(_discover(vma, login))
    managed = _managed(login["vcenter"])
    for vm in vms:
        vm["vm_context_id"] = managed.get(str(vm.get("id")))
    return jsonify({"vma_id": vma.id, "vcenter": login["vcenter"], "vms": vms})


def _validate_vm(vm: dict[str, Any], index: int) -> tuple[str, str, list[dict[str, Any]]]:
    where = f"vms[{index}]"
    canonical, name = vm_id(vm["id"], f"{where}.id"), str(vm["name"]).strip()
    try:
        disks = contexts.disk_rows_from_vm(vm)
    except ValueError as exc:
        field, _, reason = str(exc).partition(" ")
        raise unprocessable(f"{where}.{field}", reason) from None
    if not disks:
        raise unprocessable(f"{where}.disks", "must list at least one disk")
    return canonical, name, disks


@bp.post("/add")
@body(DiscoveryAdd)
def add() -> Any:
    """Add VMs to management: ``{"vma_id"?, "credential_id"?, "vcenter"?, "vms": [VM...]}``
    or ``{..., "vm_ids": [...]}`` (discovered again through the VMA). Creates one vm_context
    with its disks per VM; VMs already managed are reported under ``skipped``. → 201."""
    data: DiscoveryAdd = g.body
    vma = _vma(data)
    target_id = data.cloudstack_target_id.strip() if data.cloudstack_target_id else None
    if target_id:
        from ..database.repos import targets

        targets.get_target(target_id)
    if data.vms is not None:
        vms = [vm.model_dump() for vm in data.vms]
        if data.credential_id:
            row = credentials.get_credential(data.credential_id.strip())
            vcenter = data.vcenter.strip() if data.vcenter else row.vcenter
            credential_id = row.id
        else:
            row = credentials.default_credential()
            if data.vcenter is None and row is None:
                raise unprocessable("vcenter", "is required (no default vCenter login is saved)")
            vcenter = data.vcenter.strip() if data.vcenter else row.vcenter  # type: ignore[union-attr]
            credential_id = row.id if row else None
    else:
        wanted = list(dict.fromkeys(vm_id(v, f"vm_ids[{i}]") for i, v in enumerate(data.vm_ids)))
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
