"""CloudStack targets: create (secret key stored encrypted), list, test, offerings, networks."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..database.models import CloudStackTarget
from ..database.repos import targets
from ._context import box, config
from .auth import admin_only
from .errors import ApiError
from .schemas import TARGET_CREATE, TARGET_PATCH, body
from .serialize import target
from .validation import boolean, http_url, json_body, no_unknown, secret, string

bp = Blueprint("cloudstack_targets", __name__, url_prefix="/api/v1/cloudstack-targets")


def client_for(row: CloudStackTarget) -> Any:
    """A CloudStackClient for a stored target (the secret key is decrypted here only)."""
    try:
        from ..cloudstack import CloudStackClient
    except ImportError as exc:  # pragma: no cover - the cloudstack package ships with oma
        raise ApiError(
            "cloudstack_unavailable", f"CloudStack client unavailable: {exc}", 503
        ) from exc
    return CloudStackClient(
        row.endpoint,
        row.api_key,
        box().decrypt(row.secret_key_encrypted),
        poll_interval=config().cloudstack_poll_interval,
        verify=row.verify_tls,
    )


EDITABLE_FIELDS = (
    "name",
    "endpoint",
    "api_key",
    "secret_key",
    "zone_id",
    "oma_vm_id",
    "disk_offering_id",
    "verify_tls",
)
"""Body fields of a target that PATCH accepts; POST accepts them and ``is_default``."""


@bp.get("")
def list_targets() -> Any:
    """Every CloudStack target (never the secret key)."""
    return jsonify({"items": [target(r) for r in targets.list_targets()]})


@bp.post("")
@admin_only
@body(TARGET_CREATE)
def create_target() -> Any:
    """Save ``{"name", "endpoint", "api_key", "secret_key", "zone_id", "oma_vm_id",
    "disk_offering_id"?, "verify_tls"?, "is_default"?}`` → 201."""
    data = json_body()
    no_unknown(data, (*EDITABLE_FIELDS, "is_default"))
    name = string(data, "name", max_length=100)
    endpoint = http_url(data, "endpoint")
    api_key = string(data, "api_key")
    secret_key = secret(data, "secret_key")
    zone_id = string(data, "zone_id", max_length=64)
    oma_vm_id = string(data, "oma_vm_id", max_length=64)
    assert name and api_key and secret_key and zone_id and oma_vm_id
    row = targets.create_target(
        name,
        endpoint,
        api_key,
        box().encrypt(secret_key),
        zone_id=zone_id,
        oma_vm_id=oma_vm_id,
        disk_offering_id=string(data, "disk_offering_id", required=False, max_length=64),
        verify_tls=boolean(data, "verify_tls", default=True),
        is_default=boolean(data, "is_default"),
    )
    return jsonify(target(row)), 201


@bp.get("/<target_id>")
def get_target(target_id: str) -> Any:
    """One CloudStack target."""
    return jsonify(target(targets.get_target(target_id)))


@bp.patch("/<target_id>")
@admin_only
@body(TARGET_PATCH)
def update_target(target_id: str) -> Any:
    """Change a target's ``name``, ``endpoint``, keys, ``zone_id``, ``oma_vm_id``,
    ``disk_offering_id`` or ``verify_tls``."""
    from ..database.repos._util import update_row

    data = json_body()
    no_unknown(data, EDITABLE_FIELDS)
    fields: dict[str, Any] = {}
    for name, limit in (
        ("name", 100),
        ("api_key", 255),
        ("zone_id", 64),
        ("oma_vm_id", 64),
        ("disk_offering_id", 64),
    ):
        if name in data:
            fields[name] = string(data, name, max_length=limit)
    if "endpoint" in data:
        fields["endpoint"] = http_url(data, "endpoint")
    if "secret_key" in data:
        fields["secret_key_encrypted"] = box().encrypt(secret(data, "secret_key") or "")
    if "verify_tls" in data:
        fields["verify_tls"] = boolean(data, "verify_tls")
    row = update_row(CloudStackTarget, target_id, "cloudstack target", fields)
    return jsonify(target(row))


@bp.delete("/<target_id>")
@admin_only
def delete_target(target_id: str) -> Any:
    """Delete a CloudStack target."""
    targets.delete_target(target_id)
    return "", 204


@bp.post("/<target_id>/test")
def test_target(target_id: str) -> Any:
    """Prove endpoint and keys work and that the zone and OMA VM exist: ``{"ok", ...}``."""
    from ..errors import CloudStackError

    row = targets.get_target(target_id)
    try:
        with client_for(row) as client:
            zones = client.list_zones()
            vm = client.get_vm(row.oma_vm_id)
    except CloudStackError as exc:
        return jsonify(
            {"ok": False, "error": str(exc), "errorcode": getattr(exc, "errorcode", None)}
        )
    problems = []
    if not any(z.get("id") == row.zone_id for z in zones):
        problems.append(f"zone {row.zone_id} not found")
    if vm is None:
        problems.append(f"OMA VM {row.oma_vm_id} not found")
    return jsonify(
        {
            "ok": not problems,
            "error": "; ".join(problems) or None,
            "zones": [{"id": z.get("id"), "name": z.get("name")} for z in zones],
            "oma_vm": {"id": vm.get("id"), "name": vm.get("name"), "state": vm.get("state")}
            if vm
            else None,
        }
    )


@bp.get("/<target_id>/offerings")
def list_offerings(target_id: str) -> Any:
    """Service and disk offerings of the target."""
    with client_for(targets.get_target(target_id)) as client:
        return jsonify(
            {
                "service_offerings": client.list_service_offerings(),
                "disk_offerings": client.list_disk_offerings(),
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
