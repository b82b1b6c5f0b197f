"""VMA appliances: register (URL + token, stored encrypted; or by enrollment, see
:mod:`oma.api.enrollment`), list, get, test, revoke, delete."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify

from ..database.repos import appliances
from ._context import box, config
from .auth import admin_only
from .requests import Body, HttpUrl, Name, NoBody, Secret, body
from .serialize import appliance

bp = Blueprint("vma_appliances", __name__, url_prefix="/api/v1/vma-appliances")


class VmaCreate(Body):
    """``POST /vma-appliances`` (registration by token; enrollment is the other way)."""

    name: Name
    url: HttpUrl
    token: Secret


class VmaPatch(Body):
    """``PATCH /vma-appliances/{id}``: only the fields given change."""

    name: Name = None  # type: ignore[assignment]
    url: HttpUrl = None  # type: ignore[assignment]
    token: Secret = None  # type: ignore[assignment]


@bp.get("")
def list_appliances() -> Any:
    """Every registered VMA."""
    return jsonify({"items": [appliance(r) for r in appliances.list_appliances()]})


@bp.post("")
@admin_only
@body(VmaCreate)
def register_appliance() -> Any:
    """Register a VMA: ``{"name", "url", "token"}`` → 201 (the token is never returned)."""
    data: VmaCreate = g.body
    row = appliances.create_appliance(
        data.name.strip(), data.url.rstrip("/"), box().encrypt(data.token)
    )
    return jsonify(appliance(row)), 201


@bp.get("/<appliance_id>")
def get_appliance(appliance_id: str) -> Any:
    """One VMA."""
    return jsonify(appliance(appliances.get_appliance(appliance_id)))


@bp.patch("/<appliance_id>")
@admin_only
@body(VmaPatch)
def update_appliance(appliance_id: str) -> Any:
    """Change a VMA's ``name``, ``url`` and/or ``token`` (e.g. after rotating the token)."""
    from ..database.models import VmaAppliance
    from ..database.repos._util import update_row

    data: VmaPatch = g.body
    fields: dict[str, Any] = {}
    if "name" in data.given():
        fields["name"] = data.name.strip()
    if "url" in data.given():
        fields["url"] = data.url.rstrip("/")
    if "token" in data.given():
        fields["token_encrypted"] = box().encrypt(data.token)
    row = update_row(VmaAppliance, appliance_id, "vma appliance", fields)
    return jsonify(appliance(row))


@bp.delete("/<appliance_id>")
@admin_only
def delete_appliance(appliance_id: str) -> Any:
    """Forget a VMA (its contexts and jobs stay, with no VMA)."""
    appliances.delete_appliance(appliance_id)
    return "", 204


@bp.post("/<appliance_id>/revoke")
@admin_only
@body(NoBody)
def revoke_appliance(appliance_id: str) -> Any:
    """End a VMA's access: the OMA stops calling it, forgets its pinned certificate (its NBD
    exports no longer admit it) and replaces its API token with a random one nobody holds.
    Enrolling it again (a new code) restores it."""
    import secrets

    row = appliances.revoke(appliance_id, box().encrypt(secrets.token_urlsafe(32)))
    return jsonify(appliance(row))


@bp.post("/<appliance_id>/test")
@body(NoBody)
def test_appliance(appliance_id: str) -> Any:
    """Prove the VMA answers and accepts the stored token: its public health endpoint, then
    an authenticated call (``GET /api/v1/jobs?limit=1``) → ``{"ok", "health"}`` or ``{"ok":
    false, "error", "status"}`` (401: the VMA refused the token)."""
    from ..errors import VmaClientError
    from ..vma_client import VmaClient

    row = appliances.get_appliance(appliance_id)
    token = box().decrypt(row.token_encrypted)
    try:
        with VmaClient.for_appliance(
            row, token, config(), timeout=min(config().vma_timeout, 10.0), retries=0
        ) as client:
            info = client.health()
            # health is public: only an authenticated call proves the token
            client._call("GET", "jobs", what="an authenticated call", params={"limit": 1})
    except VmaClientError as exc:
        status = getattr(exc, "status", None)
        error = (
            f"the VMA refused the stored API token (HTTP 401); store its VMA_API_TOKEN "
            f"again (PATCH /api/v1/vma-appliances/{row.id} with a new token): {exc}"
            if status == 401
            else str(exc)
        )
        appliances.mark_seen(row.id, error=error)
        return jsonify({"ok": False, "error": error, "status": status}), 200
    version = info.get("version") if isinstance(info, dict) else None
    appliances.mark_seen(row.id, version=version)
    return jsonify({"ok": True, "health": info})
