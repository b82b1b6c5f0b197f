"""vma_appliances: registered VMAs (the token is stored encrypted by the caller)."""

from __future__ import annotations

from dataclasses import dataclass

from ..fields import now
from ..models import VmaAppliance
from ._util import get_or_raise, translate_integrity


@dataclass(frozen=True)
class ApplianceIdentity:
    """The pinned TLS identity of an enrolled, not revoked VMA."""

    subject: str  # RFC 4514, e.g. "CN=vma:site-a,O=OSSEA-Migrate"
    fingerprint: str  # sha256 hex of its client certificate


def create_appliance(name: str, url: str, token_encrypted: str) -> VmaAppliance:
    """Register a VMA; ConflictError when the name is taken."""
    with translate_integrity(f"a VMA named {name!r} is already registered", field="name"):
        return VmaAppliance.create(name=name, url=url.rstrip("/"), token_encrypted=token_encrypted)


def get_appliance(appliance_id: str) -> VmaAppliance:
    """The VMA with this id, or NotFoundError."""
    return get_or_raise(VmaAppliance, appliance_id, "vma appliance")


def list_appliances() -> list[VmaAppliance]:
    """Every registered VMA, by name."""
    return list(VmaAppliance.select().order_by(VmaAppliance.name))


def mark_seen(appliance_id: str, *, version: str | None = None, error: str | None = None) -> None:
    """Record the outcome of a call to the VMA (``error`` None means it answered)."""
    fields: dict[str, object] = {"updated_at": now(), "last_error": error}
    if error is None:
        fields["last_seen_at"] = now()
        if version:
            fields["version"] = version
    VmaAppliance.update(**fields).where(VmaAppliance.id == appliance_id).execute()


def delete_appliance(appliance_id: str) -> None:
    """Remove a VMA (its contexts and jobs keep their rows with vma = NULL)."""
    get_appliance(appliance_id).delete_instance()


def active_identity(appliance_id: str | None) -> ApplianceIdentity | None:
    """The VMA's pinned client certificate identity; None when the VMA is unknown, revoked or
    never enrolled (nothing may admit it then)."""
    if appliance_id is None:
        return None
    row = VmaAppliance.get_or_none(VmaAppliance.id == appliance_id)
    if row is None or row.revoked_at is not None or not row.cert_subject:
        return None
    return ApplianceIdentity(row.cert_subject, row.cert_fingerprint or "")


def revoke(appliance_id: str, token_encrypted: str) -> VmaAppliance:
    """Revoke a VMA: ``revoked_at`` set, its pinned certificate forgotten and its API token
    replaced by ``token_encrypted`` (a random one nobody holds). Idempotent."""
    row = get_appliance(appliance_id)
    VmaAppliance.update(
        revoked_at=row.revoked_at or now(),
        cert_fingerprint=None,
        cert_subject=None,
        token_encrypted=token_encrypted,
        updated_at=now(),
    ).where(VmaAppliance.id == row.id).execute()
    return get_appliance(appliance_id)
