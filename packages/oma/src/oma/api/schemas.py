"""Request body schemas for the OpenAPI document, attached to views with :func:`body`.

Validation itself happens in the views (each failure names its field); these schemas only
describe the bodies to API consumers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def body(schema: dict[str, Any]) -> Callable[[F], F]:
    """Decorator: document ``schema`` as the view's JSON request body."""

    def mark(view: F) -> F:
        view.request_schema = schema  # type: ignore[attr-defined]
        return view

    return mark


def obj(required: tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    """A closed JSON object schema."""
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


# what validation.string accepts: not blank (surrounding blanks are stripped), 255 at most
STR = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"}
BOOL = {"type": "boolean"}
URL = {"type": "string", "format": "uri"}
SECRET = {"type": "string", "format": "password", "writeOnly": True}

VMA_CREATE = obj(("name", "url", "token"), name=STR, url=URL, token=SECRET)
VMA_PATCH = obj(name=STR, url=URL, token=SECRET)
LOGIN = {
    "vma_id": STR,
    "credential_id": STR,
    "vcenter": STR,
    "username": STR,
    "password": SECRET,
    "datacenter": STR,
    "insecure": BOOL,
}
DISCOVER = obj(**LOGIN)
VM = {
    "type": "object",
    "required": ["id", "name", "disks"],
    "properties": {
        "id": STR,
        "name": STR,
        "path": STR,
        "disks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["capacity_bytes"],
                "properties": {
                    "key": STR,
                    "disk_key": STR,
                    "capacity_bytes": {"type": "integer"},
                    "label": STR,
                },
            },
        },
    },
}
DISCOVERY_ADD = obj(
    **LOGIN,
    cloudstack_target_id=STR,
    vms={"type": "array", "items": VM},
    vm_ids={"type": "array", "items": STR},
)
