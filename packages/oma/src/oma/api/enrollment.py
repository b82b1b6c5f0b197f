"""VMA enrollment: a one-time code instead of copying long-lived secrets by hand.

1. An admin asks for a code: ``POST /api/v1/vma-enrollments {"name", "url"}`` → 201 with
   the ``code`` (shown once: only its SHA-256 is stored), ``expires_at`` (OMA_ENROLLMENT_TTL,
   15 minutes by default) and the OMA CA's ``ca_fingerprint``.
2. On the VMA, ``vma-api-server enroll`` fetches the CA (``GET /api/v1/enroll/ca``, public),
   accepts it only when its fingerprint is the one the operator passed, and then, over HTTPS
   verified with that CA, sends ``POST /api/v1/enroll {"code", "csr"}`` (public: the code is
   the credential, good for one use). The VMA generates its key pair itself; the CSR carries
   only the public key.
3. The OMA checks the code (known, unused, unexpired; marked used in the same statement),
   signs a client certificate ``CN=vma:<name>`` and a server certificate for the VMA URL's
   host (plus ``localhost``/``127.0.0.1`` for the VMA's own migratekit), creates or updates
   the appliance with a fresh random API token (stored encrypted) and the client certificate's
   fingerprint and subject (pinned), and answers them with the CA certificate and the token.

Revocation lives with the appliances (``POST /api/v1/vma-appliances/<id>/revoke``).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from flask import Blueprint, g, jsonify
from pydantic import StringConstraints

from migration_common import utcnow

from .. import pki
from ..database.db import database
from ..database.models import VmaAppliance, VmaEnrollment
from ._context import box, config
from .auth import admin_only
from .errors import ApiError
from .requests import TEXT_PATTERN, Body, HttpsUrl, Name, Secret, body, unprocessable
from .serialize import ts

bp = Blueprint("vma_enrollment", __name__, url_prefix="/api/v1")

#: The unauthenticated paths of this blueprint (auth.PUBLIC_PATHS includes them).
PUBLIC = ("/api/v1/enroll", "/api/v1/enroll/ca")


class EnrollmentCreate(Body):
    """``POST /vma-enrollments``: the VMA's name and its HTTPS URL (it serves HTTPS only)."""

    name: Name
    url: HttpsUrl


class Enroll(Body):
    """``POST /enroll``: the one-time code and the VMA's certificate signing request (PEM)."""

    code: Secret
    csr: Annotated[str, StringConstraints(min_length=1, max_length=20000, pattern=TEXT_PATTERN)]


def _ca() -> pki.CertificateAuthority:
    from ..nbd.tls import locked_ca  # created under the lock the workers use

    with locked_ca(config().data_dir) as ca:
        return ca


@bp.post("/vma-enrollments")
@admin_only
@body(EnrollmentCreate)
def create_enrollment() -> Any:
    """A one-time enrollment code for the VMA ``name`` at ``url`` (201; the code is shown only
    in this answer)."""
    data: EnrollmentCreate = g.body
    name, url = data.name.strip(), data.url.rstrip("/")
    code = secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(seconds=config().enrollment_ttl)
    token_row = getattr(g, "token", None)
    row = VmaEnrollment.create(
        vma_name=name,
        code_hash=pki.sha256_hex(code.encode()),
        url=url,
        expires_at=expires,
        created_by=getattr(token_row, "name", None),
    )
    ca = _ca()
    return jsonify(
        {
            "id": row.id,
            "vma_name": name,
            "url": url,
            "code": code,
            "expires_at": ts(expires),
            "ca_fingerprint": pki.fingerprint(ca.cert_pem),
        }
    ), 201


@bp.get("/enroll/ca")
def enrollment_ca() -> Any:
    """The OMA CA's certificate and fingerprint (public; a VMA trusts it only when the
    fingerprint matches the one its operator was given)."""
    ca = _ca()
    return jsonify({"ca_cert": ca.cert_pem.decode(), "fingerprint": pki.fingerprint(ca.cert_pem)})


def _used() -> ApiError:
    return ApiError("enrollment_used", "code: this enrollment code was already used", 409, "code")


def _claim(code: str) -> VmaEnrollment:
    """The enrollment of ``code``, marked used; 403/409/410 when unknown, used or expired."""
    digest = pki.sha256_hex(code.encode())
    row = VmaEnrollment.get_or_none(VmaEnrollment.code_hash == digest)
    if row is None or not hmac.compare_digest(row.code_hash, digest):
        raise ApiError("enrollment_refused", "code: unknown enrollment code", 403, "code")
    now = utcnow()
    if row.used_at is not None:
        raise ApiError(
            "enrollment_used", "code: this enrollment code was already used", 409, "code"
        )
    if row.expires_at <= now:
        raise ApiError("enrollment_expired", "code: this enrollment code has expired", 410, "code")
    claimed = (
        VmaEnrollment.update(used_at=now)
        .where(
            (VmaEnrollment.id == row.id)
            & VmaEnrollment.used_at.is_null()
            & (VmaEnrollment.expires_at > now)
        )
        .execute()
    )
    if claimed != 1:  # another request used it in between
        raise ApiError(
            "enrollment_used", "code: this enrollment code was already used", 409, "code"
        )
    return row


def _server_hosts(url: str) -> list[str]:
    host = urlsplit(url).hostname or "localhost"
    return list(dict.fromkeys([host, "localhost", "127.0.0.1"]))


@bp.post("/enroll")
@body(Enroll)
def enroll() -> Any:
    """A VMA presents its one-time code and CSR; answers its certificates, the CA and its
    API token (200)."""
    data: Enroll = g.body
    code, csr = data.code, data.csr.strip()
    ca = _ca()
    with database.atomic():
        enrollment = _claim(code)
        name = enrollment.vma_name
        url = enrollment.url
        try:
            client = ca.sign_csr(csr.encode(), pki.vma_common_name(name))
            server = ca.sign_csr(csr.encode(), pki.vma_common_name(name), hosts=_server_hosts(url))
        except ValueError as exc:
            raise unprocessable("csr", str(exc)) from None
        token = secrets.token_urlsafe(32)
        fields = {
            "url": url,
            "token_encrypted": box().encrypt(token),
            "cert_fingerprint": client.fingerprint,
            "cert_subject": client.subject,
            "revoked_at": None,
            "updated_at": utcnow(),
        }
        existing = VmaAppliance.get_or_none(VmaAppliance.name == name)
        if existing is None:
            appliance = VmaAppliance.create(name=name, **fields)
        else:
            VmaAppliance.update(**fields).where(VmaAppliance.id == existing.id).execute()
            appliance = VmaAppliance.get_by_id(existing.id)
        VmaEnrollment.update(vma_id=appliance.id).where(VmaEnrollment.id == enrollment.id).execute()
    return jsonify(
        {
            "vma_id": appliance.id,
            "name": name,
            "url": url,
            "client_cert": client.cert_pem.decode(),
            "server_cert": server.cert_pem.decode(),
            "ca_cert": ca.cert_pem.decode(),
            "vma_api_token": token,
        }
    )
