"""TLS for the replica exports: the OMA's NBD server certificate and qemu-nbd's TLS arguments.

The server certificate is issued by the OMA's CA (:mod:`oma.pki`) for the host the VMA
connects to and kept in ``<OMA_DATA_DIR>/pki/nbd/`` in the layout qemu's ``tls-creds-x509``
reads: ``ca-cert.pem`` (the OMA CA, which also verifies the clients), ``server-cert.pem`` and
``server-key.pem`` (0600, the directory 0700). It is reused while it names every host, is
signed by the current CA and has more than 30 days left; otherwise it is issued again.

Each export requires TLS with a client certificate (``verify-peer=on``) and admits exactly one
identity through ``authz-simple``: the subject DN of the VMA its replica belongs to. The
database keeps it in RFC 4514 form (``CN=vma:<name>,O=OSSEA-Migrate``, :func:`oma.pki.subject`);
gnutls names a peer with the RDNs in certificate order (``O=OSSEA-Migrate,CN=vma:<name>``), so
:func:`gnutls_dn` turns one into the other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509

from ..pki import CertificateAuthority, load_ca, write_private

NBD_PKI = "nbd"
TLS_ID = "tls0"
AUTHZ_ID = "authz0"
RENEW_BEFORE = dt.timedelta(days=30)


def _qemu_escape(value: str) -> str:
    """A value inside a qemu ``--object`` option list (commas are doubled)."""
    return value.replace(",", ",,")


def _qemu_unescape(value: str) -> str:
    return value.replace(",,", ",")


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return found | set(san.get_values_for_type(x509.DNSName))


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def server_credentials(data_dir: Path, hosts: list[str]) -> Path:
    """The directory of qemu-nbd's server credentials for ``hosts`` (issued when missing,
    expiring, from another CA or not naming every host); returns its path."""
    with locked_ca(Path(data_dir)) as ca:
        return _server_credentials(ca, Path(data_dir) / "pki" / NBD_PKI, hosts)


@contextlib.contextmanager
def locked_ca(data_dir: Path) -> Iterator[CertificateAuthority]:
    """The OMA CA (created on first use) while holding a lock: several workers sharing a data
    directory, started at once, must not each create a CA."""
    directory = Path(data_dir) / "pki" / NBD_PKI
    for path in (directory.parent, directory):
        path.mkdir(mode=0o700, exist_ok=True, parents=True)
        os.chmod(path, 0o700)
    with open(directory / ".lock", "ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield load_ca(Path(data_dir))


def _server_credentials(ca: CertificateAuthority, directory: Path, hosts: list[str]) -> Path:
    wanted = [_canonical(h) for h in dict.fromkeys(hosts) if h]
    cert_path, key_path = directory / "server-cert.pem", directory / "server-key.pem"
    ca_path = directory / "ca-cert.pem"
    if not _usable(cert_path, key_path, ca, wanted):
        issued = ca.issue_server(wanted)
        write_private(key_path, issued.key_pem)
        write_private(cert_path, issued.cert_pem)
    if not ca_path.exists() or ca_path.read_bytes() != ca.cert_pem:
        shutil.copyfile(ca.cert_path, ca_path)
    return directory


def _usable(cert_path: Path, key_path: Path, ca: CertificateAuthority, hosts: list[str]) -> bool:
    if not cert_path.is_file() or not key_path.is_file():
        return False
    pem = cert_path.read_bytes()
    if not ca.verifies(pem):
        return False
    cert = x509.load_pem_x509_certificate(pem)
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return False
    return set(hosts) <= _names(cert)


def gnutls_dn(rfc4514: str) -> str:
    """A subject stored in RFC 4514 form as gnutls (and so qemu's authz) writes it."""
    name = x509.Name.from_rfc4514_string(rfc4514)
    return ",".join(rdn.rfc4514_string() for rdn in name.rdns)


def qemu_nbd_args(credentials_dir: Path, client_subject: str) -> list[str]:
    """qemu-nbd arguments: TLS required, client certificate verified against the OMA CA and
    only ``client_subject`` admitted."""
    return [
        "--object",
        f"tls-creds-x509,id={TLS_ID},dir={_qemu_escape(str(credentials_dir))},"
        "endpoint=server,verify-peer=on",
        "--object",
        f"authz-simple,id={AUTHZ_ID},identity={_qemu_escape(gnutls_dn(client_subject))}",
        f"--tls-creds={TLS_ID}",
        f"--tls-authz={AUTHZ_ID}",
    ]


def admitted_identity(argv: list[str]) -> str | None:
    """The client identity a qemu-nbd argv admits, as gnutls writes it (None: plaintext)."""
    prefix = f"authz-simple,id={AUTHZ_ID},identity="
    for arg in argv:
        if arg.startswith(prefix):
            return _qemu_unescape(arg[len(prefix) :])
    return None
