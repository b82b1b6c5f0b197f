"""vmware_credentials: saved vCenter logins (the password is stored encrypted by the caller)."""

from __future__ import annotations

from ..fields import now
from ..models import VmwareCredential
from ._util import get_or_raise, translate_integrity


def create_credential(
    name: str,
    vcenter: str,
    username: str,
    password_encrypted: str,
    *,
    datacenter: str | None = None,
    insecure: bool = False,
    is_default: bool = False,
) -> VmwareCredential:
    """Save a vCenter login; ConflictError when the name is taken."""
    with translate_integrity(f"a credential named {name!r} already exists", field="name"):
        if is_default:
            VmwareCredential.update(is_default=False, updated_at=now()).execute()
        return VmwareCredential.create(
            name=name,
            vcenter=vcenter,
            username=username,
            password_encrypted=password_encrypted,
            datacenter=datacenter,
            insecure=insecure,
            is_default=is_default,
        )


def get_credential(credential_id: str) -> VmwareCredential:
    """The credential with this id, or NotFoundError."""
    return get_or_raise(VmwareCredential, credential_id, "vmware credential")


def default_credential() -> VmwareCredential | None:
    """The credential marked default, else the only one, else None."""
    row = VmwareCredential.get_or_none(VmwareCredential.is_default == True)  # noqa: E712
    if row is None and VmwareCredential.select().count() == 1:
        row = VmwareCredential.select().first()
    return row


def list_credentials() -> list[VmwareCredential]:
    """Every saved credential, by name."""
    return list(VmwareCredential.select().order_by(VmwareCredential.name))


def delete_credential(credential_id: str) -> None:
    """Remove a credential (contexts using it keep credential = NULL)."""
    get_credential(credential_id).delete_instance()
