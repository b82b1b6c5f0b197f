"""cloudstack_targets: CloudStack endpoints (the secret key is stored encrypted by the caller)."""

from __future__ import annotations

from ..fields import now
from ..models import CloudStackTarget
from ._util import get_or_raise, translate_integrity


def create_target(
    name: str,
    endpoint: str,
    api_key: str,
    secret_key_encrypted: str,
    *,
    zone_id: str,
    oma_vm_id: str,
    disk_offering_id: str | None = None,
    verify_tls: bool = True,
    is_default: bool = False,
) -> CloudStackTarget:
    """Save a CloudStack target; ConflictError when the name is taken."""
    with translate_integrity(f"a CloudStack target named {name!r} already exists", field="name"):
        if is_default or CloudStackTarget.select().count() == 0:
            CloudStackTarget.update(is_default=False, updated_at=now()).execute()
            is_default = True
        return CloudStackTarget.create(
            name=name,
            endpoint=endpoint,
            api_key=api_key,
            secret_key_encrypted=secret_key_encrypted,
            zone_id=zone_id,
            oma_vm_id=oma_vm_id,
            disk_offering_id=disk_offering_id,
            verify_tls=verify_tls,
            is_default=is_default,
        )


def get_target(target_id: str) -> CloudStackTarget:
    """The target with this id, or NotFoundError."""
    return get_or_raise(CloudStackTarget, target_id, "cloudstack target")


def list_targets() -> list[CloudStackTarget]:
    """Every target, by name."""
    return list(CloudStackTarget.select().order_by(CloudStackTarget.name))


def delete_target(target_id: str) -> None:
    """Remove a target (contexts using it keep target = NULL)."""
    get_target(target_id).delete_instance()
