"""Bearer-token authentication for every route except ``GET /api/v1/health``.

The API token (``VMA_API_TOKEN``, or the one the OMA issued at enrollment, of which only the
SHA-256 is stored) opens everything. A job's migratekit gets its own random
token (in its environment) that opens only ``POST /api/v1/progress/<its job>/update``.
Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, current_app, request

from vma.services.progress import job_token_matches

from .errors import ApiError

PUBLIC_ENDPOINTS = {"health.health", "static"}
PROGRESS_UPDATE = "progress.update"


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def init_auth(app: Flask) -> None:
    """Require the bearer token on every request but the public ones."""

    @app.before_request
    def _require_token() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        token = _bearer()
        if token is None:
            raise ApiError("unauthorized", "missing bearer token (Authorization: Bearer …)", 401)
        expected = current_app.config["VMA"]["API_TOKEN_SHA256"]
        if hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), expected):
            return
        args = request.view_args or {}
        if request.endpoint == PROGRESS_UPDATE and job_token_matches(args["job_id"], token):
            return
        raise ApiError("unauthorized", "invalid bearer token", 401)
