"""VSphereClient sessions against a real vcsim: login failures, TLS, re-login, no secret leaks."""

from __future__ import annotations

import hashlib
import http.server
import logging
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect

from labtest.procs import free_port
from labtest.vcsim import VcsimInfo, vcsim
from vma.errors import VmwareConnectionError
from vma.vmware import VSphereClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimInfo]:
    with vcsim(tmp_path_factory.mktemp("vcsim")) as info:
        yield info


def _client(sim: VcsimInfo, **kw: object) -> VSphereClient:
    args: dict = {"port": sim.port, "insecure": True}
    args.update(kw)
    password = args.pop("password", sim.password)
    return VSphereClient(sim.host, sim.username, password, **args)


def test_bad_password_is_a_connection_error_without_the_password(
    sim: VcsimInfo, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wrong-Secret-4711"
    caplog.set_level(logging.DEBUG)
    with _client(sim, password=wrong) as client, pytest.raises(VmwareConnectionError) as err:
        client.discover()
    assert "refused the login" in str(err.value)
    assert wrong not in str(err.value)
    assert wrong not in caplog.text


def test_unreachable_vcenter_is_a_connection_error(sim: VcsimInfo) -> None:
    with (
        _client(sim, port=free_port(), timeout_s=5) as client,
        pytest.raises(VmwareConnectionError, match="unreachable"),
    ):
        client.discover()


class _NotVcenter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_an_https_server_that_is_not_vcenter_is_a_connection_error(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=x"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotVcenter)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = VSphereClient("127.0.0.1", "u", "pw", port=server.server_address[1], insecure=True)
        with client, pytest.raises(VmwareConnectionError, match="not answer as a vCenter"):
            client.discover()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_tls_is_verified_unless_insecure(sim: VcsimInfo) -> None:
    # pyVmomi alone would skip verification for 127.0.0.1; the client must not
    with (
        _client(sim, insecure=False) as client,
        pytest.raises(VmwareConnectionError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.discover()
    with _client(sim, insecure=False, ca_file=sim.ca_file) as client:
        assert client.discover()


def test_connects_lazily_and_close_is_idempotent(
    sim: VcsimInfo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vma.vmware")
    client = _client(sim)
    assert "vcenter connected" not in caplog.text
    with client:
        assert client.discover()
        assert "vcenter connected" in caplog.text
    client.close()
    assert client.discover()  # reconnects after close
    client.close()
    assert sim.password not in caplog.text
    assert sim.password not in repr(client)


def test_expired_session_logs_in_again(sim: VcsimInfo) -> None:
    with _client(sim) as client:
        before = client.discover()
        key = client._si.content.sessionManager.currentSession.key
        admin = SmartConnect(
            host=sim.host,
            port=sim.port,
            user=sim.username,
            pwd=sim.password,
            disableSslCertValidation=True,
        )
        try:
            admin.content.sessionManager.TerminateSession(sessionId=[key])
        finally:
            Disconnect(admin)
        assert client.discover() == before
        assert client._si.content.sessionManager.currentSession.key != key


def test_server_thumbprint_is_the_certificate_sha1(sim: VcsimInfo) -> None:
    pem = ssl.get_server_certificate((sim.host, sim.port))
    digest = hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    with _client(sim) as client:
        thumb = client.server_thumbprint()
    assert thumb.replace(":", "") == digest
    assert len(thumb.split(":")) == 20
