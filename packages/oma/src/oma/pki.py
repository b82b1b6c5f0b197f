"""The OMA's certificate authority: server certificates for its API and NBD exports, client
certificates for enrolled VMAs.

The CA lives in ``<OMA_DATA_DIR>/pki/``: ``ca.key`` (mode 0600, never leaves the OMA) and
``ca.crt`` (public; a VMA pins it). It is created on first use (EC P-256, ten years). Issued
certificates are EC P-256 as well, valid for ``days`` (default 825, the longest that common TLS
clients accept). A VMA's client certificate carries ``CN=vma:<name>`` and an ``OU`` unique to
the certificate (so its subject names one certificate, not a name), and is identified by its
SHA-256 fingerprint, which the OMA stores with the appliance and pins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CERT_DAYS = 825
ORGANIZATION = "OSSEA-Migrate"


@dataclass(frozen=True)
class Issued:
    """An issued certificate and its private key (PEM), with the certificate's identity."""

    cert_pem: bytes
    key_pem: bytes
    subject: str  # RFC 4514, e.g. "CN=vma:site-a,O=OSSEA-Migrate"
    fingerprint: str  # sha256 of the DER certificate, lower-case hex


def fingerprint(cert_pem: bytes) -> str:
    """The SHA-256 fingerprint (lower-case hex) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def subject(cert_pem: bytes) -> str:
    """The certificate's subject as an RFC 4514 string."""
    return x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (the directory 0700 when created), atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A CA loaded from (or created in) a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cert_path = directory / "ca.crt"
        self.key_path = directory / "ca.key"
        if not self.cert_path.exists() or not self.key_path.exists():
            self._create()
        self.cert_pem = self.cert_path.read_bytes()
        self._cert = x509.load_pem_x509_certificate(self.cert_pem)
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_path}: not an EC private key")
        self._key = key

    def _create(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, "OSSEA-Migrate OMA CA"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        write_private(self.key_path, _key_pem(key))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(self.cert_path, 0o644)

    def _issue(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        names: list[x509.GeneralName],
        days: int,
        public_key: ec.EllipticCurvePublicKey | None = None,
    ) -> Issued:
        # with ``public_key`` (from a CSR) the holder keeps its private key: key_pem is empty
        key = None if public_key is not None else ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
        if usage == ExtendedKeyUsageOID.CLIENT_AUTH:
            # a subject of its own per certificate: the NBD exports admit a client by subject,
            # so a revoked certificate of a VMA enrolled again under its name stays refused
            attributes.append(
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"id-{secrets.token_hex(8)}")
            )
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        name = x509.Name(attributes)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self._cert.subject)
            .public_key(public_key or key.public_key())  # type: ignore[union-attr]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert_pem = builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        key_pem = _key_pem(key) if key is not None else b""
        return Issued(cert_pem, key_pem, subject(cert_pem), fingerprint(cert_pem))

    def issue_server(self, hosts: list[str], days: int = CERT_DAYS) -> Issued:
        """A server certificate for ``hosts`` (DNS names and/or IPs; the first is the CN)."""
        if not hosts:
            raise ValueError("a server certificate needs at least one host name or address")
        return self._issue(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, _general_names(hosts), days)

    def issue_client(self, common_name: str, days: int = CERT_DAYS) -> Issued:
        """A client certificate with ``CN=<common_name>`` (a VMA's is ``vma:<name>``)."""
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [], days)

    def sign_csr(
        self, csr_pem: bytes, common_name: str, *, hosts: list[str] | None = None
    ) -> Issued:
        """Sign a CSR's EC P-256 public key: a client certificate with ``CN=<common_name>`` (the
        CSR's own subject is ignored), or a server certificate for ``hosts`` when given. The
        holder keeps its private key (``key_pem`` is empty). ValueError for a bad CSR."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise ValueError("not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise ValueError("the request's signature does not match its public key")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise ValueError("the request's key must be EC P-256")
        if hosts is None:
            return self._issue(
                common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [], CERT_DAYS, public_key
            )
        return self._issue(
            hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, _general_names(hosts), CERT_DAYS, public_key
        )

    def verifies(self, cert_pem: bytes) -> bool:
        """True when ``cert_pem`` was signed by this CA (and is within its validity period)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        now = _now()
        return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _general_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def vma_common_name(vma_name: str) -> str:
    """The CN of a VMA's client certificate."""
    return f"vma:{vma_name}"


def load_ca(data_dir: Path) -> CertificateAuthority:
    """The OMA's CA in ``<data_dir>/pki`` (created on first use)."""
    return CertificateAuthority(data_dir / "pki")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data`` (for one-time codes stored as hashes)."""
    return hashlib.sha256(data).hexdigest()
