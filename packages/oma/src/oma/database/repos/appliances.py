"""vma_appliances: registered VMAs (the token is stored encrypted by the caller)."""

from __future__ import annotations

from ..fields import now
from ..models import VmaAppliance
from ._util import get_or_raise, translate_integrity


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
