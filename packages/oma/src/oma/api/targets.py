"""CloudStack targets: create (secret key stored encrypted), list, test, offerings, networks.

A target's disk offering decides which replicas it can carry (:mod:`oma.cloudstack.offerings`).
Its facts are read from CloudStack by the test endpoint (or by the first replication request
that needs them) and stored on the target (``disk_offering_facts``); a change of endpoint, keys
or offering forgets them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify
from pydantic import Field

from migration_common import get_logger, utcnow

from ..cloudstack import CloudStackClient, is_removed
from ..cloudstack.offerings import (
    DEFAULT_CUSTOM_DISK_MAX_GIB,
    describe_limit,
    disk_offering_facts,
    disk_offering_problems,
)
from ..database.models import CloudStackTarget, VmContext, VmDisk
from ..database.repos import targets
from ..database.repos._util import update_row
from ._context import box, config
from .auth import admin_only
from .errors import ApiError
from .requests import (
    Body,
    HttpUrl,
    Id,
    Line,
    Name,
    NoBody,
    Secret,
    body,
    int_between,
    optional,
)
from .serialize import target, ts

log = get_logger(__name__)

bp = Blueprint("cloudstack_targets", __name__, url_prefix="/api/v1/cloudstack-targets")


def client_for(row: CloudStackTarget) -> CloudStackClient:
    """A CloudStackClient for a stored target (the secret key is decrypted here only)."""
    return CloudStackClient(
        row.endpoint,
        targets.api_key(row, box()),
        box().decrypt(row.secret_key_encrypted),
        poll_interval=config().cloudstack_poll_interval,
        verify=row.verify_tls,
    )


FACTS_DEPEND_ON = ("endpoint", "api_key", "secret_key", "disk_offering_id")
"""Fields whose change makes the stored disk offering facts stale."""


class _TargetFields(Body):
    name: Name = None  # type: ignore[assignment]
    endpoint: HttpUrl = Field(  # type: ignore[assignment]
        None, description="the CloudStack API URL, e.g. https://cloud.example/client/api"
    )
    api_key: Line = None  # type: ignore[assignment]
    secret_key: Secret = None  # type: ignore[assignment]
    zone_id: Id = None  # type: ignore[assignment]
    oma_vm_id: Id = Field(None, description="the CloudStack VM the OMA runs as")  # type: ignore[assignment]
    disk_offering_id: optional(Id) = None
    disk_size_max_gib: int_between(1, 1 << 20) | None = Field(
        None,
        description="the largest custom disk size (GB) CloudStack accepts, for an API key "
        "that cannot read custom.diskoffering.size.max (else 1024 is assumed)",
    )
    verify_tls: bool = True


class TargetCreate(_TargetFields):
    """``POST /cloudstack-targets``."""

    name: Name
    endpoint: HttpUrl
    api_key: Line
    secret_key: Secret
    zone_id: Id
    oma_vm_id: Id
    is_default: bool = False


class TargetPatch(_TargetFields):
    """``PATCH /cloudstack-targets/{id}``: only the fields given change."""


# ----- what the target's disk offering can carry ----------------------------------------------
def read_offering_facts(client: Any, row: CloudStackTarget) -> dict[str, Any] | None:
    """Read the target's disk offering and CloudStack's custom size limit; store them on the
    target. None (stored too) when the target has no disk offering or it does not exist."""
    offering = client.disk_offering(row.disk_offering_id) if row.disk_offering_id else None
    stored = None
    if offering is not None:
        stored = {
            "id": offering.get("id"),
            "name": offering.get("name"),
            "iscustomized": bool(offering.get("iscustomized")),
            "disksize": int(offering.get("disksize") or 0),
            "cloudstack_max_gib": client.custom_disk_max_gib(),
            "checked_at": ts(utcnow()),
        }
    CloudStackTarget.update(disk_offering_facts=stored).where(
        CloudStackTarget.id == row.id
    ).execute()
    row.disk_offering_facts = stored
    return stored


def offering_facts(row: CloudStackTarget) -> dict[str, Any] | None:
    """The stored disk offering of the target as :func:`disk_offering_facts` with the custom
    size limit in force: CloudStack's when the key could read it, else the target's
    ``disk_size_max_gib``, else CloudStack's default. None when nothing is stored."""
    stored = row.disk_offering_facts
    if not stored or stored.get("id") != row.disk_offering_id:
        return None
    limit, source = size_limit(row, stored.get("cloudstack_max_gib"))
    return disk_offering_facts(stored, max_gib=limit, max_source=source)


def size_limit(row: CloudStackTarget, cloudstack_max_gib: int | None) -> tuple[int, str]:
    """(largest custom disk size in GB, where it comes from): CloudStack's setting when the key
    can read it, else the target's ``disk_size_max_gib``, else CloudStack's default."""
    if cloudstack_max_gib:
        return int(cloudstack_max_gib), "cloudstack"
    if row.disk_size_max_gib:
        return int(row.disk_size_max_gib), "target"
    return DEFAULT_CUSTOM_DISK_MAX_GIB, "default"


def known_disks(row: CloudStackTarget) -> dict[str, int]:
    """Every disk of the VMs that replicate to this target ("label (key k) of VM v" → bytes); a VM
    without a target of its own uses the default (or oldest) target."""
    default = (
        CloudStackTarget.select(CloudStackTarget.id)
        .order_by(CloudStackTarget.is_default.desc(), CloudStackTarget.created_at)
        .first()
    )
    mine = VmContext.target == row.id
    if default is not None and default.id == row.id:
        mine = mine | VmContext.target.is_null()
    query = (
        VmDisk.select(VmDisk.disk_key, VmDisk.label, VmDisk.capacity_bytes, VmContext.name)
        .join(VmContext)
        .where(mine)
    )
    return {
        f"{d.label or 'disk'} (key {d.disk_key}) of VM {d.context.name}": d.capacity_bytes
        for d in query
    }


def refuse_disks_too_large(ctx: VmContext, field: str) -> None:
    """409 ``disk_too_large`` (naming ``field``) when the disk offering of the VM's target cannot
    carry a disk that has no replica volume yet.

    Uses the facts stored on the target; when none are stored they are read from CloudStack once
    (and stored). When CloudStack cannot be asked the check is left to the workflow, whose
    ``create_volume`` applies the same rule before creating a volume.
    """
    from ..errors import CloudStackError
    from ..workflows.replication import context_target

    row = context_target(ctx)
    if row is None or not row.disk_offering_id:
        return
    disks = {
        f"{d.label or 'disk'} (key {d.disk_key})": d.capacity_bytes
        for d in VmDisk.select().where((VmDisk.context == ctx.id) & VmDisk.replica_volume.is_null())
    }
    if not disks:
        return
    facts = offering_facts(row)
    if facts is None:
        try:
            with client_for(row) as client:
                read_offering_facts(client, row)
        except CloudStackError as exc:
            log.warning("disk offering unreadable; checked later", target=row.name, error=str(exc))
            return
        facts = offering_facts(row)
        if facts is None:
            raise ApiError(
                "disk_offering_not_found",
                f"disk offering {row.disk_offering_id} of CloudStack target {row.name} does not "
                "exist; choose another one (PATCH the target's disk_offering_id)",
                409,
                field,
            )
    problems = disk_offering_problems(facts, disks)
    if problems:
        remedy = (
            "Raise CloudStack's custom.diskoffering.size.max (or, when the API key cannot read "
            "it, the target's disk_size_max_gib)"
            if facts["customized"]
            else "Choose a customized disk offering for the target (its disk_offering_id)"
        )
        raise ApiError(
            "disk_too_large",
            f"VM {ctx.name} cannot be replicated to CloudStack target {row.name}: "
            + "; ".join(problems)
            + f". {remedy}.",
            409,
            field,
        )


def _offering_report(client: Any, row: CloudStackTarget) -> dict[str, Any]:
    """The test answer's ``disk_offering``: facts, problems (replicas it cannot carry), notes
    and, unless the offering is customized, a customized one (``suggested``)."""
    stored = read_offering_facts(client, row)
    problems: list[str] = []
    notes: list[str] = []
    facts = offering_facts(row)
    if not row.disk_offering_id:
        problems.append("the target has no disk offering: replica volumes cannot be created")
    elif facts is None:
        problems.append(f"disk offering {row.disk_offering_id} not found")
    else:
        disks = known_disks(row)
        problems += disk_offering_problems(facts, disks)
        if not facts["customized"]:
            notes.append(
                f"disk offering {facts['name']} is not customized: every replica volume gets its "
                f"fixed {facts['disksize_gib']} GB, whatever the size of its source disk"
            )
        else:
            notes.append(f"custom sizes up to {facts['max_gib']} GB ({describe_limit(facts)})")
    suggested = None
    if facts is None or not facts["customized"]:  # another customized one has the same limit
        suggested = next(
            (
                {"id": o.get("id"), "name": o.get("name")}
                for o in client.list_disk_offerings()
                if o.get("iscustomized") and o.get("id") != row.disk_offering_id
            ),
            None,
        )
        if suggested:
            notes.append(
                f"customized disk offering {suggested['name']} ({suggested['id']}) would give "
                "every replica its source disk's size"
            )
    return {
        **(facts or {"id": row.disk_offering_id}),
        "checked_at": stored.get("checked_at") if stored else None,
        "problems": problems,
        "notes": notes,
        "suggested": suggested,
    }


@bp.get("")
def list_targets() -> Any:
    """Every CloudStack target (never the secret key)."""
    return jsonify({"items": [target(r) for r in targets.list_targets()]})


@bp.post("")
@admin_only
@body(TargetCreate)
def create_target() -> Any:
    """Save ``{"name", "endpoint", "api_key", "secret_key", "zone_id", "oma_vm_id",
    "disk_offering_id"?, "disk_size_max_gib"?, "verify_tls"?, "is_default"?}`` → 201.

    ``disk_size_max_gib``: the largest custom disk size (GB) CloudStack accepts, for an API key
    that cannot read ``custom.diskoffering.size.max`` (else 1024, CloudStack's default, is
    assumed)."""
    data: TargetCreate = g.body
    limit = data.disk_size_max_gib
    row = targets.create_target(
        data.name.strip(),
        data.endpoint.rstrip("/"),
        data.api_key.strip(),
        data.secret_key,
        box=box(),
        zone_id=data.zone_id.strip(),
        oma_vm_id=data.oma_vm_id.strip(),
        disk_offering_id=data.disk_offering_id.strip() if data.disk_offering_id else None,
        verify_tls=data.verify_tls,
        is_default=data.is_default,
    )
    if limit is not None:
        row.disk_size_max_gib = limit
        row.save(only=[CloudStackTarget.disk_size_max_gib])
    return jsonify(target(row)), 201


@bp.get("/<target_id>")
def get_target(target_id: str) -> Any:
    """One CloudStack target."""
    return jsonify(target(targets.get_target(target_id)))


@bp.patch("/<target_id>")
@admin_only
@body(TargetPatch)
def update_target(target_id: str) -> Any:
    """Change a target's ``name``, ``endpoint``, keys, ``zone_id``, ``oma_vm_id``,
    ``disk_offering_id``, ``disk_size_max_gib`` or ``verify_tls``; a change of endpoint, keys or
    disk offering forgets the stored disk offering facts."""
    data: TargetPatch = g.body
    given = data.given()
    fields: dict[str, Any] = {}
    for name in given:
        value = getattr(data, name)
        if name == "secret_key":
            fields["secret_key_encrypted"] = box().encrypt(value)
        elif name == "api_key":
            fields["api_key"] = targets.key_hint(value.strip())
            fields["api_key_encrypted"] = box().encrypt(value.strip())
        elif name == "endpoint":
            fields["endpoint"] = value.rstrip("/")
        else:
            fields[name] = value.strip() if isinstance(value, str) else value
    if any(name in given for name in FACTS_DEPEND_ON):
        fields["disk_offering_facts"] = None
    row = update_row(CloudStackTarget, target_id, "cloudstack target", fields)
    return jsonify(target(row))


@bp.delete("/<target_id>")
@admin_only
def delete_target(target_id: str) -> Any:
    """Delete a CloudStack target."""
    targets.delete_target(target_id)
    return "", 204


@bp.post("/<target_id>/test")
@body(NoBody)
def test_target(target_id: str) -> Any:
    """Prove endpoint and keys work, that the zone and OMA VM exist and that the disk offering
    can carry the replicas of the VMs known to this OMA: ``{"ok", "error", "zones", "oma_vm",
    "disk_offering": {…, "problems", "notes", "suggested"}}``."""
    from ..errors import CloudStackError

    row = targets.get_target(target_id)
    try:
        with client_for(row) as client:
            zones = client.list_zones()
            vm = client.get_vm(row.oma_vm_id)
            offering = _offering_report(client, row)
    except CloudStackError as exc:
        return jsonify(
            {"ok": False, "error": str(exc), "errorcode": getattr(exc, "errorcode", None)}
        )
    problems = []
    if not any(z.get("id") == row.zone_id for z in zones):
        problems.append(f"zone {row.zone_id} not found")
    if vm is None or is_removed(vm):
        problems.append(f"OMA VM {row.oma_vm_id} not found")
    problems += offering["problems"]
    return jsonify(
        {
            "ok": not problems,
            "error": "; ".join(problems) or None,
            "zones": [{"id": z.get("id"), "name": z.get("name")} for z in zones],
            "oma_vm": {"id": vm.get("id"), "name": vm.get("name"), "state": vm.get("state")}
            if vm
            else None,
            "disk_offering": offering,
        }
    )


@bp.get("/<target_id>/offerings")
def list_offerings(target_id: str) -> Any:
    """Service offerings of the target under ``items`` (as ``/networks`` and ``/templates``
    answer; also under ``service_offerings``, the older key) and its disk offerings under
    ``disk_offerings``, each with ``replica_problems``: the disks of the VMs known to this OMA
    it could not carry."""
    row = targets.get_target(target_id)
    disks = known_disks(row)
    with client_for(row) as client:
        limit, source = size_limit(row, client.custom_disk_max_gib())
        disk_offerings = [
            {
                **o,
                "replica_problems": disk_offering_problems(
                    disk_offering_facts(o, max_gib=limit, max_source=source), disks
                ),
            }
            for o in client.list_disk_offerings()
        ]
        service_offerings = client.list_service_offerings()
        return jsonify(
            {
                "items": service_offerings,
                "service_offerings": service_offerings,
                "disk_offerings": disk_offerings,
            }
        )


@bp.get("/<target_id>/networks")
def list_networks(target_id: str) -> Any:
    """Networks of the target's zone."""
    row = targets.get_target(target_id)
    with client_for(row) as client:
        return jsonify({"items": client.list_networks(zone_id=row.zone_id)})


@bp.get("/<target_id>/templates")
def list_templates(target_id: str) -> Any:
    """Executable templates of the target's zone."""
    row = targets.get_target(target_id)
    with client_for(row) as client:
        return jsonify({"items": client.list_templates(zone_id=row.zone_id)})
