"""vCenter routes through the real server against a real vcsim: discovery, VM, power, CBT."""

from __future__ import annotations

import json
import stat

import pytest

from labtest.vcsim import vcsim
from labtest.vma import vma_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with vcsim(tmp_path_factory.mktemp("vcsim")) as info:
        yield info


def _discover_body(sim, **extra):
    return {
        "vcenter": f"{sim.host}:{sim.port}",
        "username": sim.username,
        "password": sim.password,
        "insecure": True,
        **extra,
    }


def test_discover_remembers_credentials_for_vm_operations(sim, tmp_path):
    with vma_server(tmp_path) as vma:  # no vCenter configured
        status, err = vma.request("GET", "vms/whatever/power")
        assert status == 409 and err["error"]["code"] == "vcenter_not_configured"

        vms = vma.post("discover", _discover_body(sim))["vms"]
        assert vms, "vcsim serves VMs"
        vm = next(v for v in vms if v["disks"] and v["nics"])
        assert {"id", "name", "path", "power_state", "disks", "nics"} <= set(vm)

        stored = vma.data_dir / "vcenter.json"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert json.loads(stored.read_text())["username"] == sim.username
        assert sim.password.encode() not in stored.read_bytes()  # encrypted at rest
        log = (tmp_path / "vma-api-1.log").read_text()
        assert sim.password not in log

        assert vma.get(f"vms/{vm['id']}")["id"] == vm["id"]
        status, err = vma.request("GET", "vms/no-such-vm")
        assert status == 404 and err["error"]["code"] == "vm_not_found"


def test_discover_bad_input_and_bad_login(sim, tmp_path):
    with vma_server(tmp_path) as vma:
        body = _discover_body(sim)
        body.pop("password")
        status, err = vma.request("POST", "discover", body)
        assert status == 422 and err["error"]["field"] == "password"
        status, err = vma.request("POST", "discover", _discover_body(sim, vcenter="h:99999"))
        assert status == 422 and err["error"]["field"] == "vcenter"
        status, err = vma.request("POST", "discover", dict(_discover_body(sim), password="wrong"))
        assert status == 502 and err["error"]["code"] == "vcenter_unreachable"
        assert not (vma.data_dir / "vcenter.json").exists()


def test_power_and_cbt(sim, tmp_path):
    with vma_server(tmp_path, vcenter=sim) as vma:
        vm = vma.post("discover", _discover_body(sim))["vms"][0]
        vm_id = vm["id"]
        vma.post(f"vms/{vm_id}/power-on")
        assert vma.get(f"vms/{vm_id}/power") == {"vm_id": vm_id, "power_state": "poweredOn"}
        off = vma.post(f"vms/{vm_id}/power-off", {"graceful": True, "timeout_s": 2, "force": True})
        assert off["power_state"] == "poweredOff"
        assert off["method"] in ("graceful", "forced")
        again = vma.post(f"vms/{vm_id}/power-off", {"graceful": True, "timeout_s": 2})
        assert again["method"] == "already_off"
        on = vma.post(f"vms/{vm_id}/power-on")
        assert on["power_state"] == "poweredOn"
        status, err = vma.request("POST", f"vms/{vm_id}/power-off", {"timeout_s": -1})
        assert status == 422 and err["error"]["field"] == "timeout_s"

        assert vma.get(f"vms/{vm_id}/cbt")["vm_id"] == vm_id
        enabled = vma.post(f"vms/{vm_id}/cbt/enable")
        assert enabled["enabled"] is True
        assert vma.get(f"vms/{vm_id}/cbt")["enabled"] is True


def _listen(kind, tmp_path):
    """A loopback server that is not a vCenter: plain HTTP, or HTTPS with its own certificate."""
    import http.server
    import ssl
    import threading

    class _Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(404)
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if kind == "https":
        import subprocess

        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", str(tmp_path / "s.key"), "-out", str(tmp_path / "s.crt"),
             "-days", "1", "-subj", "/CN=127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def test_discovery_cannot_tell_closed_http_and_tls_ports_apart(sim, tmp_path):
    """The vCenter address comes from the caller: whatever listens there (nothing, a plain
    HTTP server, a TLS server), the answer is the same status and words but the address."""
    from labtest.procs import free_port

    answers = []
    with vma_server(tmp_path) as vma:
        closed = free_port()
        status, err = vma.request(
            "POST", "discover", _discover_body(sim, vcenter=f"127.0.0.1:{closed}", insecure=False)
        )
        answers.append(
            (status, err["error"]["code"], err["error"]["message"].replace(str(closed), "P"))
        )
        for kind in ("http", "https"):
            server, thread = _listen(kind, tmp_path)
            port = server.server_address[1]
            try:
                for insecure in (False, True):
                    body = _discover_body(sim, vcenter=f"127.0.0.1:{port}", insecure=insecure)
                    status, err = vma.request("POST", "discover", body)
                    message = err["error"]["message"].replace(str(port), "P")
                    answers.append((status, err["error"]["code"], message))
            finally:
                server.shutdown()
                server.server_close()
                thread.join(10)
        assert len(set(answers)) == 1, answers
        status, code, message = answers[0]
        assert (status, code) == (502, "vcenter_unreachable")
        assert "no vCenter SDK answered at 127.0.0.1:P" in message
        # a vCenter that refuses the login still says so: it tells nothing of other ports
        status, err = vma.request("POST", "discover", _discover_body(sim, password="wrong-pw"))
        assert status == 502 and "refused the login" in err["error"]["message"]
