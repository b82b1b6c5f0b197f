"""vCenter credentials: create (password stored encrypted), list, get, delete."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify
from pydantic import Field

from ..database.repos import credentials
from ._context import box
from .auth import admin_only
from .requests import Body, Line, Name, Secret, body, optional
from .serialize import credential

bp = Blueprint("vmware_credentials", __name__, url_prefix="/api/v1/vmware-credentials")


class _CredentialFields(Body):
    name: Name = None  # type: ignore[assignment]
    vcenter: Line = Field(None, description="host or host:port")  # type: ignore[assignment]
    username: Line = None  # type: ignore[assignment]
    password: Secret = None  # type: ignore[assignment]
    datacenter: optional(Line) = None
    insecure: bool = Field(False, description="skip TLS verification of the vCenter")


class CredentialCreate(_CredentialFields):
    """``POST /vmware-credentials``."""

    name: Name
    vcenter: Line = Field(description="host or host:port")
    username: Line
    password: Secret
    is_default: bool = False


class CredentialPatch(_CredentialFields):
    """``PATCH /vmware-credentials/{id}``: only the fields given change (datacenter null
    removes it)."""


@bp.get("")
def list_credentials() -> Any:
    """Every saved vCenter credential (never the password)."""
    return jsonify({"items": [credential(r) for r in credentials.list_credentials()]})


@bp.post("")
@admin_only
@body(CredentialCreate)
def create_credential() -> Any:
    """Save ``{"name", "vcenter", "username", "password", "datacenter"?, "insecure"?,
    "is_default"?}`` → 201."""
    data: CredentialCreate = g.body
    row = credentials.create_credential(
        data.name.strip(),
        data.vcenter.strip(),
        data.username.strip(),
        box().encrypt(data.password),
        datacenter=data.datacenter.strip() if data.datacenter else None,
        insecure=data.insecure,
        is_default=data.is_default,
    )
    return jsonify(credential(row)), 201


@bp.get("/<credential_id>")
def get_credential(credential_id: str) -> Any:
    """One credential."""
    return jsonify(credential(credentials.get_credential(credential_id)))


@bp.patch("/<credential_id>")
@admin_only
@body(CredentialPatch)
def update_credential(credential_id: str) -> Any:
    """Change a credential's ``name``, ``vcenter``, ``username``, ``password``,
    ``datacenter`` or ``insecure``."""
    from ..database.models import VmwareCredential
    from ..database.repos._util import update_row

    data: CredentialPatch = g.body
    fields: dict[str, Any] = {}
    for name in data.given():
        value = getattr(data, name)
        if name == "password":
            fields["password_encrypted"] = box().encrypt(value)
        else:
            fields[name] = value.strip() if isinstance(value, str) else value
    row = update_row(VmwareCredential, credential_id, "vmware credential", fields)
    return jsonify(credential(row))


@bp.delete("/<credential_id>")
@admin_only
def delete_credential(credential_id: str) -> Any:
    """Delete a credential."""
    credentials.delete_credential(credential_id)
    return "", 204
