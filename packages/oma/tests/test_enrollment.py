"""VMA enrollment through the API: one-time codes, signed CSRs, pinned certificates,
revocation; the CloudStack API key is masked."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _csr(key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _code(client: Any, auth: Any, name: str = "site-a") -> dict[str, Any]:
    r = client.post(
        "/api/v1/vma-enrollments",
        headers=auth.admin,
        json={"name": name, "url": "https://vma.site-a.example:8081"},
    )
    assert r.status_code == 201, r.json
    return r.json


def _row(model: Any, **where: Any) -> Any:
    from oma.database import database

    with database.connection_context():
        return model.get(*[getattr(model, k) == v for k, v in where.items()])


def test_enrollment_signs_the_csr_pins_the_certificate_and_issues_a_token(
    app: Any, client: Any, auth: Any
) -> None:
    from oma import pki
    from oma.database.models import VmaAppliance, VmaEnrollment

    created = _code(client, auth)
    ca = pki.load_ca(app.extensions["oma_config"].data_dir)
    assert created["ca_fingerprint"] == pki.fingerprint(ca.cert_pem)
    stored = _row(VmaEnrollment, id=created["id"])
    assert stored.code_hash == pki.sha256_hex(created["code"].encode())  # only the hash
    assert created["code"] not in str(stored.__data__.values())

    key = ec.generate_private_key(ec.SECP256R1())
    r = client.post("/api/v1/enroll", json={"code": created["code"], "csr": _csr(key)})
    assert r.status_code == 200, r.json
    answer = r.json
    client_cert = answer["client_cert"].encode()
    assert ca.verifies(client_cert) and ca.verifies(answer["server_cert"].encode())
    subject = pki.subject(client_cert)  # its own OU: the subject names this certificate
    assert subject.startswith("CN=vma:site-a,OU=id-") and subject.endswith(",O=OSSEA-Migrate")
    cert = x509.load_pem_x509_certificate(client_cert)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    server = x509.load_pem_x509_certificate(answer["server_cert"].encode())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "vma.site-a.example" in names.get_values_for_type(x509.DNSName)
    assert answer["ca_cert"].encode() == ca.cert_pem

    row = _row(VmaAppliance, id=answer["vma_id"])
    assert (row.name, row.url) == ("site-a", "https://vma.site-a.example:8081")
    assert row.cert_fingerprint == pki.fingerprint(client_cert)
    assert row.cert_subject == subject
    assert app.extensions["oma_secrets"].decrypt(row.token_encrypted) == answer["vma_api_token"]
    assert _row(VmaEnrollment, id=created["id"]).used_at is not None

    shown = client.get(f"/api/v1/vma-appliances/{row.id}", headers=auth.viewer).json
    assert shown["cert_subject"] == row.cert_subject and shown["revoked_at"] is None
    assert "vma_api_token" not in shown and answer["vma_api_token"] not in str(shown)


def test_a_code_works_once_and_not_after_it_expires(client: Any, auth: Any) -> None:
    from oma.database import database
    from oma.database.models import VmaEnrollment

    created = _code(client, auth)
    assert (
        client.post("/api/v1/enroll", json={"code": created["code"], "csr": _csr()}).status_code
        == 200
    )
    again = client.post("/api/v1/enroll", json={"code": created["code"], "csr": _csr()})
    assert again.status_code == 409 and again.json["error"]["code"] == "enrollment_used"

    unknown = client.post("/api/v1/enroll", json={"code": "not-a-code", "csr": _csr()})
    assert unknown.status_code == 403 and unknown.json["error"]["field"] == "code"

    late = _code(client, auth, "site-b")
    from migration_common import utcnow

    with database.connection_context():
        VmaEnrollment.update(expires_at=utcnow() - timedelta(seconds=1)).where(
            VmaEnrollment.id == late["id"]
        ).execute()
    expired = client.post("/api/v1/enroll", json={"code": late["code"], "csr": _csr()})
    assert expired.status_code == 410 and expired.json["error"]["code"] == "enrollment_expired"


def test_a_bad_csr_is_a_422_naming_it_and_does_not_use_the_code(client: Any, auth: Any) -> None:
    created = _code(client, auth)
    bad = client.post("/api/v1/enroll", json={"code": created["code"], "csr": "garbage"})
    assert bad.status_code == 422 and bad.json["error"]["field"] == "csr"  # a string, not a CSR
    rsa_like = client.post(
        "/api/v1/enroll",
        json={"code": created["code"], "csr": _csr(ec.generate_private_key(ec.SECP384R1()))},
    )
    assert rsa_like.status_code == 422 and "P-256" in rsa_like.json["error"]["message"]
    assert (
        client.post("/api/v1/enroll", json={"code": created["code"], "csr": _csr()}).status_code
        == 200
    )
    missing = client.post("/api/v1/enroll", json={"csr": _csr()})
    assert missing.status_code == 400 and missing.json["error"]["field"] == "code"
    plain = client.post(
        "/api/v1/vma-enrollments", headers=auth.admin, json={"name": "p", "url": "http://vma:8081"}
    )
    assert plain.status_code == 400 and plain.json["error"]["field"] == "url"


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_an_admin_creates_codes(client: Any, auth: Any, role: str) -> None:
    r = client.post(
        "/api/v1/vma-enrollments",
        headers=auth.headers(role),
        json={"name": "x", "url": "https://x:8081"},
    )
    assert r.status_code == 403
    assert (
        client.post("/api/v1/vma-enrollments", json={"name": "x", "url": "https://x"}).status_code
        == 401
    )


def test_the_ca_is_public_with_its_fingerprint(app: Any, client: Any) -> None:
    from oma import pki

    r = client.get("/api/v1/enroll/ca")
    assert r.status_code == 200
    assert r.json["fingerprint"] == pki.fingerprint(r.json["ca_cert"].encode())


def test_revoking_ends_access_and_enrolling_again_restores_it(
    app: Any, client: Any, auth: Any
) -> None:
    from oma import pki
    from oma.database import database
    from oma.database.models import VmaAppliance
    from oma.database.repos import appliances
    from oma.errors import VmaClientError
    from oma.vma_client import VmaClient

    answer = client.post(
        "/api/v1/enroll", json={"code": _code(client, auth)["code"], "csr": _csr()}
    ).json
    vma_id = answer["vma_id"]
    with database.connection_context():
        identity = appliances.active_identity(vma_id)
    assert identity is not None and identity.subject == pki.subject(answer["client_cert"].encode())

    assert (
        client.post(f"/api/v1/vma-appliances/{vma_id}/revoke", headers=auth.operator).status_code
        == 403
    )
    r = client.post(f"/api/v1/vma-appliances/{vma_id}/revoke", headers=auth.admin)
    assert r.status_code == 200 and r.json["revoked_at"] and r.json["cert_subject"] is None
    with database.connection_context():
        assert appliances.active_identity(vma_id) is None
        row = VmaAppliance.get_by_id(vma_id)
    box = app.extensions["oma_secrets"]
    assert box.decrypt(row.token_encrypted) != answer["vma_api_token"]  # rotated

    # the OMA no longer calls it (without even opening a connection)
    client_ = VmaClient.for_appliance(row, "t" * 20, app.extensions["oma_config"])
    with pytest.raises(VmaClientError, match="revoked") as caught:
        client_.health()
    assert getattr(caught.value, "code", None) == "revoked"
    tested = client.post(f"/api/v1/vma-appliances/{vma_id}/test", headers=auth.operator).json
    assert tested["ok"] is False and "revoked" in tested["error"]

    again = client.post(
        "/api/v1/enroll", json={"code": _code(client, auth)["code"], "csr": _csr()}
    ).json
    assert again["vma_id"] == vma_id
    with database.connection_context():
        assert appliances.active_identity(vma_id) is not None
        assert VmaAppliance.get_by_id(vma_id).revoked_at is None


def test_the_cloudstack_api_key_is_masked(client: Any, auth: Any) -> None:
    key = "AbCdEfGhIjKlMnOpQrStUvWxYz-0123456789"
    r = client.post(
        "/api/v1/cloudstack-targets",
        headers=auth.admin,
        json={
            "name": "cs",
            "endpoint": "http://127.0.0.1:1/client/api",
            "api_key": key,
            "secret_key": "s" * 40,
            "zone_id": "z",
            "oma_vm_id": "o",
        },
    )
    assert r.status_code == 201, r.json
    for role in ("viewer", "operator", "admin"):
        listed = client.get("/api/v1/cloudstack-targets", headers=auth.headers(role))
        assert key not in listed.get_data(as_text=True)
        assert listed.json["items"][0]["api_key"] == "****6789"


def test_the_cloudstack_api_key_is_stored_encrypted(app: Any, client: Any, auth: Any) -> None:
    """Created through the API: only a hint is in clear. Stored in clear by an older OMA:
    encrypted at the next start, and still the key the CloudStack client gets."""
    from oma.database import database
    from oma.database.models import CloudStackTarget
    from oma.database.repos import targets

    key = "Legacy-Key-0123456789-abcdefghijkl"
    body = {
        "name": "cs",
        "endpoint": "http://127.0.0.1:1/client/api",
        "api_key": key,
        "secret_key": "s" * 40,
        "zone_id": "z",
        "oma_vm_id": "o",
    }
    r = client.post("/api/v1/cloudstack-targets", headers=auth.admin, json=body)
    assert r.status_code == 201, r.json
    box = app.extensions["oma_secrets"]
    with app.app_context(), database.connection_context():
        row = CloudStackTarget.get_by_id(r.json["id"])
        assert key not in (row.api_key, row.api_key_encrypted) and row.api_key == "****ijkl"
        assert targets.api_key(row, box) == key
        # a row an older OMA wrote: the key in clear, nothing encrypted
        CloudStackTarget.update(api_key=key, api_key_encrypted=None).execute()
        assert targets.encrypt_api_keys(box) == 1 and targets.encrypt_api_keys(box) == 0
        row = CloudStackTarget.get_by_id(r.json["id"])
        assert row.api_key == "****ijkl" and targets.api_key(row, box) == key
