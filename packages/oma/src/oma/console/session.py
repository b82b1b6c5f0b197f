"""Console sign-in: a session cookie bound to an API token, and CSRF protection.

Signing in takes an API token; the session stores only the token's row id and the hash the
database keeps of it, never the token. Every console request looks the row up again, so a
revoked (or deleted) token ends its sessions at their next request, and the role is always the
token's current one. The cookie is HttpOnly, SameSite=Strict and Secure when the request came
over TLS; its signing key is derived from the OMA's secret key, so it survives restarts and is
the same in every ``oma serve`` process. Every POST carries the session's CSRF token (a form
field, or the ``X-CSRF-Token`` header for htmx requests).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from flask import Flask, Request, abort, g, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from ..api.auth import RANK
from ..database.models import ApiToken, Role
from ..database.repos import tokens
from ..secrets import load_key

COOKIE = "oma_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
API_PREFIXES = ("/api/", "/metrics")  # paths without sessions


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure whenever the request itself came over TLS.
    Only the console has sessions: the API authenticates every request by its bearer token
    and never reads a cookie, so its requests get Flask's null session (nothing to verify)."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(API_PREFIXES):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def session_key(secret_key: str | None, data_dir: Path) -> bytes:
    """The cookie signing key: derived from the OMA's secret key (never the key itself)."""
    key = load_key(secret_key, data_dir)
    return hmac.new(key.encode("ascii"), b"oma console session v1", hashlib.sha256).digest()


def init_sessions(app: Flask, secret_key: str | None, data_dir: Path) -> None:
    """Configure the session cookie on ``app``."""
    app.secret_key = session_key(secret_key, data_dir)
    app.session_interface = ConsoleSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/",
    )


def sign_in(token: str) -> ApiToken | None:
    """Start a session for ``token``; the token row, or None when it is unknown or revoked."""
    row = tokens.verify_token(token.strip())
    if row is None:
        return None
    tokens.touch(row)
    session.clear()
    session["token_id"] = row.id
    session["token_hash"] = row.token_hash
    session["csrf"] = secrets.token_urlsafe(32)
    return row


def sign_out() -> None:
    """End the session."""
    session.clear()


def current_token() -> ApiToken | None:
    """The session's token row if it still exists, is not revoked and matches; sets g.token and
    g.role. A session whose token is gone or revoked is cleared."""
    token_id, digest = session.get("token_id"), session.get("token_hash")
    if token_id is None or not digest:
        return None
    row = ApiToken.get_or_none(ApiToken.id == token_id)
    if (
        row is None
        or row.revoked_at is not None
        or not hmac.compare_digest(row.token_hash, str(digest))
    ):
        session.pop("token_id", None)
        session.pop("token_hash", None)
        return None
    tokens.touch(row)
    g.token, g.role = row, row.role
    return row


def can(role: str) -> bool:
    """Whether the signed-in token has at least ``role`` (the API's ranking)."""
    current = getattr(g, "role", None)
    return current is not None and RANK[current] >= RANK[Role(role).value]


def csrf_token() -> str:
    """The session's CSRF token (created on first use, e.g. by the sign-in form)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def local_path(target: str | None) -> str | None:
    """``target`` when it is a path on this console (never another host: no ``//`` or ``/\\``
    prefix, no scheme), else None."""
    if not target or not target.startswith("/") or target[1:2] in ("/", "\\"):
        return None
    return target


def check_csrf() -> None:
    """400 unless a POST carries the session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    expected = session.get("csrf") or ""
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        abort(400, "the form expired or did not come from this console; reload the page")
