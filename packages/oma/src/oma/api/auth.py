"""Bearer-token authentication and role checks.

Every route under ``/api/v1`` and ``/metrics`` needs ``Authorization: Bearer <token>`` except
the health endpoints. Roles: ``viewer`` may only read (GET/HEAD); ``operator`` may also start,
stop and delete replications and add VMs; ``admin`` may additionally manage VMA appliances,
vCenter credentials and CloudStack targets (routes marked with :func:`admin_only`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, g, request

from ..database.models import Role
from ..database.repos import tokens
from .errors import ApiError

F = TypeVar("F", bound=Callable[..., Any])
PUBLIC_PATHS = {"/health", "/api/v1/health", "/api/v1/enroll", "/api/v1/enroll/ca"}
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
RANK = {Role.VIEWER.value: 0, Role.OPERATOR.value: 1, Role.ADMIN.value: 2}


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate() -> None:
    """before_request hook: resolve the token into ``g.token`` / ``g.role`` or answer 401/403."""
    if request.path in PUBLIC_PATHS or not request.path.startswith(("/api/", "/metrics")):
        return
    token = _bearer()
    if token is None:
        raise ApiError("unauthorized", "missing bearer token (Authorization: Bearer <token>)", 401)
    row = tokens.verify_token(token)
    if row is None:
        raise ApiError("unauthorized", "invalid or revoked token", 401)
    tokens.touch(row)
    g.token = row
    g.role = row.role
    needed = Role.VIEWER if request.method in READ_METHODS else Role.OPERATOR
    require(needed)


def require(role: Role) -> None:
    """403 unless the current token's role is at least ``role``."""
    current = getattr(g, "role", None)
    if current is None or RANK[current] < RANK[role.value]:
        raise ApiError(
            "forbidden", f"this action needs the {role.value} role (your token is {current})", 403
        )


def admin_only(view: F) -> F:
    """Decorator: the route needs an admin token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        require(Role.ADMIN)
        return view(*args, **kwargs)

    wrapper.admin_only = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def init_auth(app: Flask) -> None:
    """Install the authentication hook (after the database hook)."""
    app.before_request(authenticate)
