"""``vma-api-server enroll``: enroll this VMA with an OMA using a one-time code.

    vma-api-server enroll --oma https://oma.example:8082 --code-file code.txt \\
        --ca-fingerprint 3f9a…

The code is read from a file (or ``-`` for stdin), never from the command line. Steps:

1. The OMA CA's certificate is fetched from ``GET /api/v1/enroll/ca`` and accepted only when
   its SHA-256 fingerprint is the one given (the admin got it with the code). With
   ``--oma-ca-file`` (the OMA's API uses a certificate from another CA), the API is verified
   with that file instead, and the fingerprint still checks the CA the OMA returns.
2. A key pair is generated here (EC P-256); only a CSR leaves the VMA, in
   ``POST /api/v1/enroll`` over HTTPS verified with that CA (host name included).
3. The answer is stored in ``<VMA_DATA_DIR>/pki/`` (0700): ``client.crt``, ``client.key``,
   ``oma-ca.crt`` (:mod:`vma.services.identity`), ``server.crt`` (the API's HTTPS certificate,
   same key) and ``api-token.sha256`` (the SHA-256 of the API token the OMA will use; the
   token itself is not kept). Restart ``vma-api-server`` afterwards: it then serves HTTPS and
   accepts only the enrolled token.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import requests

from .config import SERVER_CERT_FILE, TOKEN_HASH_FILE


class EnrollError(Exception):
    """Enrollment failed; the message says why (never contains the code or the token)."""


def _normalize_fingerprint(text: str) -> str:
    value = text.strip().lower().replace(":", "").removeprefix("sha256").lstrip("=:")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise EnrollError("--ca-fingerprint must be a SHA-256 fingerprint (64 hex digits)")
    return value


def _fingerprint(pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def _key_and_csr() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vma")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def _same_key(cert_pem: bytes, key_pem: bytes) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    cert_key = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(enc, fmt)
    key = serialization.load_pem_private_key(key_pem, password=None)
    return cert_key == key.public_key().public_bytes(enc, fmt)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _request(method: str, url: str, verify: bool | str, **kw: Any) -> Any:
    try:
        res = requests.request(method, url, verify=verify, timeout=(5.0, 30.0), **kw)
    except requests.exceptions.SSLError as exc:
        raise EnrollError(f"the OMA's TLS certificate did not verify at {url}: {exc}") from None
    except requests.RequestException as exc:
        raise EnrollError(f"cannot reach the OMA at {url}: {type(exc).__name__}") from None
    try:
        body = res.json()
    except ValueError:
        body = None
    if res.status_code >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        message = err.get("message") if isinstance(err, dict) else res.text[:200]
        raise EnrollError(f"the OMA refused the enrollment (HTTP {res.status_code}): {message}")
    if not isinstance(body, dict):
        raise EnrollError(f"the OMA answered {url} with no JSON object")
    return body


def enroll(
    oma_url: str,
    code: str,
    ca_fingerprint: str,
    data_dir: Path,
    *,
    oma_ca_file: str | None = None,
) -> dict[str, Any]:
    """Enroll with the OMA at ``oma_url``; store the identity in ``data_dir``; return
    ``vma_id``, ``name``, ``url``, ``pki_dir`` and ``token`` (the API token the OMA will use,
    for a caller that must call this VMA too, such as the lab; the command never shows it)."""
    from migration_common import register_secret
    from vma.services import identity

    register_secret(code)
    expected = _normalize_fingerprint(ca_fingerprint)
    base = oma_url.rstrip("/").removesuffix("/api/v1")
    if not base.startswith("https://"):
        raise EnrollError("--oma must be the OMA's https:// URL (enrollment needs TLS)")
    with tempfile.TemporaryDirectory() as tmp:
        verify = oma_ca_file
        if verify is None:
            # Not trusted yet: accepted below only when it is the CA the operator named.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # urllib3's InsecureRequestWarning
                ca = _request("GET", f"{base}/api/v1/enroll/ca", False)
            ca_pem = str(ca.get("ca_cert") or "").encode()
            if not ca_pem or _fingerprint(ca_pem) != expected:
                raise EnrollError(
                    "the OMA's CA certificate does not have the fingerprint given with "
                    "--ca-fingerprint: not enrolling (check the fingerprint with the OMA admin)"
                )
            verify = str(Path(tmp) / "oma-ca.crt")
            Path(verify).write_bytes(ca_pem)
        key_pem, csr_pem = _key_and_csr()
        answer = _request(
            "POST", f"{base}/api/v1/enroll", verify, json={"code": code, "csr": csr_pem.decode()}
        )
    token = str(answer.get("vma_api_token") or "")
    register_secret(token)
    client_pem = str(answer.get("client_cert") or "").encode()
    server_pem = str(answer.get("server_cert") or "").encode()
    ca_pem = str(answer.get("ca_cert") or "").encode()
    if not (token and client_pem and server_pem and ca_pem):
        raise EnrollError("the OMA's enrollment answer lacks a certificate or the token")
    if _fingerprint(ca_pem) != expected:
        raise EnrollError("the OMA answered with a CA other than the one given: not enrolling")
    if not (_same_key(client_pem, key_pem) and _same_key(server_pem, key_pem)):
        raise EnrollError("the OMA's certificates are not for this VMA's key: not enrolling")
    saved = identity.save(data_dir, client_pem, key_pem, ca_pem)
    pki_dir = saved.cert.parent
    _write_private(pki_dir / SERVER_CERT_FILE, server_pem)
    _write_private(pki_dir / TOKEN_HASH_FILE, hashlib.sha256(token.encode()).hexdigest().encode())
    return {
        "vma_id": answer.get("vma_id"),
        "name": answer.get("name"),
        "url": answer.get("url"),
        "pki_dir": str(pki_dir),
        "token": token,
    }


def _read_code(path: str) -> str:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise EnrollError(f"cannot read --code-file {path}: {exc.strerror}") from None
    code = text.strip()
    if not code:
        raise EnrollError(f"--code-file {path} is empty")
    return code


def main(argv: list[str]) -> int:
    """``vma-api-server enroll``; exit 0 when enrolled, 2 on bad settings, 1 when refused."""
    from migration_common import ConfigError

    parser = argparse.ArgumentParser(
        prog="vma-api-server enroll",
        description="Enroll this VMA with an OMA using a one-time code "
        "(from `oma vma enroll NAME --url URL`).",
    )
    parser.add_argument("--oma", required=True, help="the OMA API's https:// URL")
    parser.add_argument(
        "--code-file", required=True, help="file holding the one-time code ('-': stdin)"
    )
    parser.add_argument(
        "--ca-fingerprint", required=True, help="SHA-256 fingerprint of the OMA CA (hex)"
    )
    parser.add_argument(
        "--oma-ca-file",
        help="CA file verifying the OMA API's certificate when it is not from the OMA CA",
    )
    parser.add_argument(
        "--data-dir", help="the VMA's data directory (default: VMA_DATA_DIR, /var/lib/vma)"
    )
    args = parser.parse_args(argv)
    try:
        if args.data_dir:
            data_dir = Path(args.data_dir)
        else:
            from migration_common import load_settings

            from .config import PREFIX, SETTINGS

            # the settings as the server reads them (VMA_CONFIG too); no token needed yet
            data_dir = Path(load_settings(PREFIX, SETTINGS)["DATA_DIR"])
        result = enroll(
            args.oma,
            _read_code(args.code_file),
            args.ca_fingerprint,
            data_dir,
            oma_ca_file=args.oma_ca_file,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EnrollError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"enrolled as VMA {result['name']} (id {result['vma_id']}); identity in "
        f"{result['pki_dir']}. Restart vma-api-server: it now serves HTTPS and accepts only "
        "the token the OMA holds."
    )
    return 0
