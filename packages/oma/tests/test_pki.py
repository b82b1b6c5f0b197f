"""The OMA's CA: created once with a private key only the OMA can read; issued certificates
verify against it and carry the names TLS peers check (real TLS handshake over loopback)."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest

from oma.pki import load_ca, vma_common_name


def test_ca_created_once_with_private_key_0600(tmp_path):
    ca = load_ca(tmp_path)
    assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    assert load_ca(tmp_path).cert_pem == ca.cert_pem  # reused, not recreated


def test_issued_certificates_verify_and_foreign_ones_do_not(tmp_path):
    ca, other = load_ca(tmp_path / "a"), load_ca(tmp_path / "b")
    client = ca.issue_client(vma_common_name("site-a"))
    assert client.subject.startswith("CN=vma:site-a,OU=id-") and client.subject.endswith(
        ",O=OSSEA-Migrate"
    )
    # every certificate has a subject of its own (the exports admit by subject)
    assert ca.issue_client(vma_common_name("site-a")).subject != client.subject
    assert len(client.fingerprint) == 64
    assert ca.verifies(client.cert_pem)
    assert not other.verifies(client.cert_pem)


def _write(path, data):
    path.write_bytes(data)
    return str(path)


@pytest.mark.timeout(30)
def test_mutual_tls_handshake_with_issued_certificates(tmp_path):
    ca = load_ca(tmp_path)
    server, client = ca.issue_server(["127.0.0.1", "localhost"]), ca.issue_client("vma:x")
    cafile = _write(tmp_path / "ca.pem", ca.cert_pem)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(
        _write(tmp_path / "s.crt", server.cert_pem), _write(tmp_path / "s.key", server.key_pem)
    )
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.load_verify_locations(cafile)
    cctx = ssl.create_default_context(cafile=cafile)
    cctx.load_cert_chain(
        _write(tmp_path / "c.crt", client.cert_pem), _write(tmp_path / "c.key", client.key_pem)
    )
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen = {}

    def serve():
        conn, _ = listener.accept()
        with sctx.wrap_socket(conn, server_side=True) as tls:
            seen["peer"] = dict(x[0] for x in tls.getpeercert()["subject"])
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            cctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(10)
        assert seen["peer"]["commonName"] == "vma:x"
    finally:
        listener.close()
