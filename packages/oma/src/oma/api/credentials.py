"""vCenter credentials: create (password stored encrypted), list, get, delete."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..database.repos import credentials
from ._context import box
from .auth import admin_only
from .schemas import CREDENTIAL_CREATE, CREDENTIAL_PATCH, body
from .serialize import credential
from .validation import boolean, json_body, no_unknown, secret, string

bp = Blueprint("vmware_credentials", __name__, url_prefix="/api/v1/vmware-credentials")


@bp.get("")
def list_credentials() -> Any:
    """Every saved vCenter credential (never the password)."""
    return jsonify({"items": [credential(r) for r in credentials.list_credentials()]})


@bp.post("")
@admin_only
@body(CREDENTIAL_CREATE)
def create_credential() -> Any:
    """Save ``{"name", "vcenter", "username", "password", "datacenter"?, "insecure"?,
    "is_default"?}`` → 201."""
    data = json_body()
    no_unknown(
        data, ("name", "vcenter", "username", "password", "datacenter", "insecure", "is_default")
    )
    name = string(data, "name", max_length=100)
    vcenter = string(data, "vcenter")
    username = string(data, "username")
    password = secret(data, "password")
    assert name and vcenter and username and password
    row = credentials.create_credential(
        name,
        vcenter,
        username,
        box().encrypt(password),
        datacenter=string(data, "datacenter", required=False),
        insecure=boolean(data, "insecure"),
        is_default=boolean(data, "is_default"),
    )
    return jsonify(credential(row)), 201


@bp.get("/<credential_id>")
def get_credential(credential_id: str) -> Any:
    """One credential."""
    return jsonify(credential(credentials.get_credential(credential_id)))


@bp.patch("/<credential_id>")
@admin_only
@body(CREDENTIAL_PATCH)
def update_credential(credential_id: str) -> Any:
    """Change a credential's ``name``, ``vcenter``, ``username``, ``password``,
    ``datacenter`` or ``insecure``."""
    from ..database.models import VmwareCredential
    from ..database.repos._util import update_row

    data = json_body()
    no_unknown(data, ("name", "vcenter", "username", "password", "datacenter", "insecure"))
    fields: dict[str, Any] = {}
    for name, limit in (("name", 100), ("vcenter", 255), ("username", 255)):
        if name in data:
            fields[name] = string(data, name, max_length=limit)
    if "datacenter" in data:
        fields["datacenter"] = string(data, "datacenter", required=False)
    if "password" in data:
        fields["password_encrypted"] = box().encrypt(secret(data, "password") or "")
    if "insecure" in data:
        fields["insecure"] = boolean(data, "insecure")
    row = update_row(VmwareCredential, credential_id, "vmware credential", fields)
    return jsonify(credential(row))


@bp.delete("/<credential_id>")
@admin_only
def delete_credential(credential_id: str) -> Any:
    """Delete a credential."""
    credentials.delete_credential(credential_id)
    return "", 204
