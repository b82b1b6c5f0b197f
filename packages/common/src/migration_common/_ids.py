"""VMware VM ids in one canonical form, so one VM is never two VMs by spelling.

vCenter finds a VM by its UUID case-insensitively; the VMA's job guard and the OMA's managed
VMs compare ids as strings. :func:`canonical_vm_id` is applied wherever an id enters the VMA or
the OMA: surrounding whitespace removed, a UUID (any case, with or without hyphens or braces)
written as lower-case ``8-4-4-4-12``, any other id (a managed object reference such as
``vm-42``) kept as given. An id holding a control or format character is refused.
"""

from __future__ import annotations

import re
import unicodedata
import uuid

_UUID = re.compile(
    r"\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?", re.IGNORECASE
)


def canonical_vm_id(value: object) -> str:
    """The canonical form of a VM id; ValueError (a message without the field name) otherwise."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    text = value.strip()  # surrounding blanks, a trailing line feed included, do not count
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise ValueError(f"must not contain control characters (found U+{ord(char):04X})")
    if not text:
        raise ValueError("must not be empty")
    if _UUID.fullmatch(text):
        return str(uuid.UUID(text.strip("{}")))
    return text
