"""cloudstack_targets: CloudStack endpoints, their API key and secret key stored encrypted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..fields import now
from ..models import CloudStackTarget
from ._util import get_or_raise, translate_integrity

if TYPE_CHECKING:
    from ...secrets import SecretBox


def create_target(
    name: str,
    endpoint: str,
    api_key: str,
    secret_key: str,
    *,
    box: SecretBox,
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
            api_key=key_hint(api_key),
            api_key_encrypted=box.encrypt(api_key),
            secret_key_encrypted=box.encrypt(secret_key),
            zone_id=zone_id,
            oma_vm_id=oma_vm_id,
            disk_offering_id=disk_offering_id,
            verify_tls=verify_tls,
            is_default=is_default,
        )


def key_hint(api_key: str) -> str:
    """What is stored of an API key in clear: ``****`` and its last four characters."""
    return "****" + (api_key[-4:] if len(api_key) >= 16 else "")


def api_key(row: CloudStackTarget, box: SecretBox) -> str:
    """The target's API key in clear (decrypted; a key stored before encryption as it is)."""
    return box.decrypt(row.api_key_encrypted) if row.api_key_encrypted else row.api_key


def encrypt_api_keys(box: SecretBox) -> int:
    """Encrypt the API keys stored in clear (before migration 0010); returns how many."""
    done = 0
    for row in CloudStackTarget.select().where(CloudStackTarget.api_key_encrypted.is_null()):
        CloudStackTarget.update(
            api_key_encrypted=box.encrypt(row.api_key), api_key=key_hint(row.api_key)
        ).where(
            CloudStackTarget.id == row.id, CloudStackTarget.api_key_encrypted.is_null()
        ).execute()
        done += 1
    return done


def get_target(target_id: str) -> CloudStackTarget:
    """The target with this id, or NotFoundError."""
    return get_or_raise(CloudStackTarget, target_id, "cloudstack target")


def list_targets() -> list[CloudStackTarget]:
    """Every target, by name."""
    return list(CloudStackTarget.select().order_by(CloudStackTarget.name))


def delete_target(target_id: str) -> None:
    """Remove a target (contexts using it keep target = NULL)."""
    get_target(target_id).delete_instance()
