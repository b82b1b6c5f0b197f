"""api_tokens: create and verify bearer tokens; only a SHA-256 hash is stored.

A token is ``oma_`` + 32 random bytes (URL-safe base64), so a plain SHA-256 is a safe
verifier (no dictionary to attack); lookup is by hash, compared in constant time.

Verified tokens are not cached: every API request looks its token up (one query on the unique
``token_hash`` index), so a revoked token is refused from the next request on, by every API
process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ...errors import ConflictError
from ..fields import now
from ..models import ApiToken, Role
from ._select import Where, first
from ._util import translate_integrity

TOKEN_PREFIX = "oma_"


def hash_token(token: str) -> str:
    """The stored verifier of ``token`` (hex SHA-256)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(name: str, role: Role | str) -> tuple[ApiToken, str]:
    """Create a token; returns (row, plaintext). The plaintext is never stored."""
    role = Role(role)
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with translate_integrity(f"a token named {name!r} already exists", field="name"):
        row = ApiToken.create(name=name, role=role.value, token_hash=hash_token(plaintext))
    return row, plaintext


def verify_token(token: str | None) -> ApiToken | None:
    """The active token row matching ``token``, or None (unknown, revoked or empty)."""
    if not token:
        return None
    digest = hash_token(token)
    row = first(ApiToken, Where().eq("token_hash", digest))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.token_hash, digest):
        return None
    return row


def touch(row: ApiToken) -> None:
    """Record that ``row`` was just used (at most once a minute, to spare writes)."""
    stamp = now()
    if row.last_used_at is None or (stamp - row.last_used_at).total_seconds() > 60:
        ApiToken.update(last_used_at=stamp).where(ApiToken.id == row.id).execute()


def revoke_token(name: str) -> bool:
    """Revoke the token called ``name``; False when there is none."""
    return bool(
        ApiToken.update(revoked_at=now())
        .where(ApiToken.name == name, ApiToken.revoked_at.is_null())
        .execute()
    )


def list_tokens() -> list[ApiToken]:
    """Every token row (hashes only), oldest first."""
    return list(ApiToken.select().order_by(ApiToken.created_at))


__all__ = [
    "ConflictError",
    "create_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
    "touch",
    "verify_token",
]
