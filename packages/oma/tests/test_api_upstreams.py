"""API calls that reach out: discovery and VMA test against a real HTTP VMA stub, CloudStack
target test/offerings/networks against the real CloudStack simulator process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

VMA_TOKEN = "stub-vma-token-123"
VMS = [
    {
        "id": "4201-a",
        "name": "app-01",
        "path": "/DC0/vm/app-01",
        "cpus": 1,
        "memory_mb": 512,
        "disks": [
            {
                "key": "2000",
                "label": "Hard disk 1",
                "capacity_bytes": 4 << 20,
                "unit_number": 0,
                "controller_key": 1000,
            }
        ],
    },
    {
        "id": "4201-b",
        "name": "app-02",
        "path": "/DC0/vm/app-02",
        "cpus": 1,
        "memory_mb": 512,
        "disks": [
            {"key": "2000", "label": "Hard disk 1", "capacity_bytes": 2 << 20},
            {"key": "2001", "label": "Hard disk 2", "capacity_bytes": 2 << 20},
        ],
    },
]


class _VmaStub(BaseHTTPRequestHandler):
    """Answers /api/v1/health (public) and /api/v1/jobs and /api/v1/discover (bearer token
    checked) like the VMA."""

    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {VMA_TOKEN}":
            self._reply(
                401, {"error": {"code": "unauthorized", "message": "bad token", "field": None}}
            )
            return False
        return True

    def do_GET(self) -> None:
        if self.path == "/api/v1/health":
            self._reply(200, {"status": "ok", "version": "9.9.9"})
        elif self._authorized() and self.path.startswith("/api/v1/jobs"):
            self._reply(200, {"jobs": []})

    def do_POST(self) -> None:
        if not self._authorized():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "body": body})
        if body.get("password") != "vc-pass":
            self._reply(
                400,
                {
                    "error": {
                        "code": "vcenter_login",
                        "message": "login failed",
                        "field": "password",
                    }
                },
            )
            return
        self._reply(200, {"vms": VMS})


@pytest.fixture
def vma_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VmaStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _register(client: Any, auth: Any, url: str, token: str = VMA_TOKEN) -> str:
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": "vma", "url": url, "token": token},
    )
    assert r.status_code == 201
    return r.json["id"]


def test_vma_test_uses_stored_token(client: Any, auth: Any, vma_stub: str) -> None:
    good = _register(client, auth, vma_stub)
    r = client.post(f"/api/v1/vma-appliances/{good}/test", headers=auth.operator)
    assert r.json["ok"] is True and r.json["health"]["version"] == "9.9.9"
    assert (
        client.get(f"/api/v1/vma-appliances/{good}", headers=auth.viewer).json["version"] == "9.9.9"
    )
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": "bad", "url": vma_stub, "token": "wrong-token"},
    )
    r = client.post(f"/api/v1/vma-appliances/{r.json['id']}/test", headers=auth.operator)
    assert r.json["ok"] is False and r.json["status"] == 401


def test_discovery_with_saved_credential_and_add_by_id(
    client: Any, auth: Any, vma_stub: str
) -> None:
    vma_id = _register(client, auth, vma_stub)
    r = client.post(
        "/api/v1/vmware-credentials",
        headers=auth.admin,
        json={
            "name": "lab",
            "vcenter": "vc.lab",
            "username": "u",
            "password": "vc-pass",
            "is_default": True,
        },
    )
    cred = r.json["id"]
    r = client.post("/api/v1/discovery", headers=auth.operator, json={"vma_id": vma_id})
    assert r.status_code == 200, r.json
    assert [vm["name"] for vm in r.json["vms"]] == ["app-01", "app-02"]
    assert all(vm["vm_context_id"] is None for vm in r.json["vms"])
    # The password went in the body, never the URL.
    assert _VmaStub.seen[-1]["path"] == "/api/v1/discover"
    assert _VmaStub.seen[-1]["body"]["password"] == "vc-pass"
    r = client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": vma_id, "credential_id": cred, "vm_ids": ["4201-b"]},
    )
    assert r.status_code == 201, r.json
    added = r.json["added"][0]
    assert added["credential_id"] == cred and added["vcenter"] == "vc.lab"
    detail = client.get(f"/api/v1/vm-contexts/{added['id']}", headers=auth.viewer).json
    assert [d["disk_key"] for d in detail["disks"]] == ["2000", "2001"]
    r = client.post("/api/v1/discovery", headers=auth.operator, json={"vma_id": vma_id})
    assert {vm["id"]: vm["vm_context_id"] for vm in r.json["vms"]}["4201-b"] == added["id"]
    r = client.post(
        "/api/v1/discovery/add", headers=auth.operator, json={"vma_id": vma_id, "vm_ids": ["nope"]}
    )
    assert r.status_code == 404 and r.json["error"]["field"] == "vm_ids"


def test_discovery_errors_are_clear(client: Any, auth: Any, vma_stub: str) -> None:
    vma_id = _register(client, auth, vma_stub)
    r = client.post(
        "/api/v1/discovery",
        headers=auth.operator,
        json={"vma_id": vma_id, "vcenter": "vc", "username": "u", "password": "x"},
    )
    assert r.status_code == 502 and "login failed" in r.json["error"]["message"]
    r = client.post("/api/v1/discovery", headers=auth.operator, json={"vma_id": vma_id})
    # fits the schema; no vCenter login given or saved
    assert r.status_code == 422 and r.json["error"]["field"] == "credential_id"
    dead = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": "dead", "url": "http://127.0.0.1:1", "token": "abcd"},
    ).json
    r = client.post(
        "/api/v1/discovery",
        headers=auth.operator,
        json={"vma_id": dead["id"], "vcenter": "v", "username": "u", "password": "p"},
    )
    assert r.status_code == 502 and r.json["error"]["code"] == "vma_unreachable"


@pytest.mark.slow
def test_cloudstack_target_against_simulator(client: Any, auth: Any, tmp_path: Path) -> None:
    from labtest.cloudstack import cloudstack_sim

    with cloudstack_sim(tmp_path / "cs") as sim:
        body = {
            "name": "lab-cs",
            "endpoint": sim.endpoint,
            "api_key": sim.api_key,
            "secret_key": sim.secret_key,
            "zone_id": sim.zone_id,
            "oma_vm_id": sim.oma_vm_id,
            "disk_offering_id": sim.custom_disk_offering_id,
        }
        r = client.post("/api/v1/cloudstack-targets", headers=auth.admin, json=body)
        assert r.status_code == 201, r.json
        target = r.json
        assert target["is_default"] is True
        r = client.post(f"/api/v1/cloudstack-targets/{target['id']}/test", headers=auth.operator)
        assert r.json["ok"] is True, r.json
        assert r.json["oma_vm"]["id"] == sim.oma_vm_id
        offering = r.json["disk_offering"]
        assert (offering["id"], offering["customized"], offering["problems"]) == (
            sim.custom_disk_offering_id,
            True,
            [],
        )
        assert offering["suggested"] is None
        offerings = client.get(
            f"/api/v1/cloudstack-targets/{target['id']}/offerings", headers=auth.viewer
        ).json
        assert sim.service_offering_id in {o["id"] for o in offerings["service_offerings"]}
        assert sim.custom_disk_offering_id in {o["id"] for o in offerings["disk_offerings"]}
        nets = client.get(
            f"/api/v1/cloudstack-targets/{target['id']}/networks", headers=auth.viewer
        ).json
        assert sim.network_id in {n["id"] for n in nets["items"]}
        # Wrong secret → CloudStack's 401 reported, not a 500.
        bad = client.post(
            "/api/v1/cloudstack-targets",
            headers=auth.admin,
            json=dict(body, name="bad", secret_key="nope"),
        ).json
        r = client.post(f"/api/v1/cloudstack-targets/{bad['id']}/test", headers=auth.operator)
        assert r.status_code == 200 and r.json["ok"] is False and r.json["errorcode"] == 401
        r = client.get(f"/api/v1/cloudstack-targets/{bad['id']}/networks", headers=auth.viewer)
        assert r.status_code == 502 and r.json["error"]["code"] == "cloudstack_error"
