"""The HTTP API through Flask's test client: auth, roles, validation, errors, replications."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oma.database import database
from oma.database.models import ReplicationJob, VmaAppliance
from oma.database.repos import contexts, jobs

VM = {
    "id": "4200aaaa-0000-4000-8000-000000000001",
    "name": "db-01",
    "path": "/DC0/vm/db-01",
    "cpus": 2,
    "memory_mb": 2048,
    "disks": [
        {"key": "2000", "label": "Hard disk 1", "capacity_bytes": 16 << 20, "unit_number": 0},
        {"key": "2001", "label": "Hard disk 2", "capacity_bytes": 8 << 20, "unit_number": 1},
    ],
}


def _vma(client: Any, auth: Any, name: str = "vma-1") -> dict[str, Any]:
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": name, "url": "http://127.0.0.1:9", "token": "vma-secret-tok"},
    )
    assert r.status_code == 201, r.json
    return r.json


def _add_vm(client: Any, auth: Any, vma_id: str, vm: dict[str, Any] = VM) -> dict[str, Any]:
    r = client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": vma_id, "vcenter": "vc.lab", "vms": [vm]},
    )
    assert r.status_code == 201, r.json
    return r.json["added"][0]


def test_unknown_route_is_json_404(client: Any) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"


def test_method_not_allowed_is_json_405(client: Any, auth: Any) -> None:
    r = client.put("/api/v1/replications", headers=auth.admin)
    assert r.status_code == 405 and r.json["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("header", [None, "Bearer ", "Bearer oma_wrong", "Basic abc"])
def test_bad_or_missing_token_is_401(client: Any, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.get("/api/v1/vm-contexts", headers=headers)
    assert r.status_code == 401
    assert r.json["error"]["code"] == "unauthorized"


def test_health_needs_no_token(client: Any) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json["database"]["ok"] is True
    assert r.json["status"] == "degraded"  # no worker heartbeat yet


def test_health_reports_worker_heartbeat(app: Any, client: Any) -> None:
    from oma.database.repos import heartbeats

    with app.app_context(), database.connection_context():
        heartbeats.beat("w-1")
    body = client.get("/api/v1/health").json
    assert body["status"] == "ok" and body["worker"]["worker_id"] == "w-1"


def test_viewer_is_read_only_and_operator_cannot_register_vma(client: Any, auth: Any) -> None:
    assert client.get("/api/v1/replications", headers=auth.viewer).status_code == 200
    r = client.post("/api/v1/replications", headers=auth.viewer, json={"vm_context_id": "x"})
    assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.operator,
        json={"name": "v", "url": "http://127.0.0.1:9", "token": "t0ken"},
    )
    assert r.status_code == 403


def test_secrets_are_encrypted_and_never_returned(app: Any, client: Any, auth: Any) -> None:
    vma = _vma(client, auth)
    assert "token" not in vma and vma["has_token"] is True
    r = client.post(
        "/api/v1/vmware-credentials",
        headers=auth.admin,
        json={"name": "lab", "vcenter": "vc.lab", "username": "admin", "password": "pa55-w0rd-lab"},
    )
    assert r.status_code == 201 and "password" not in r.json
    r = client.post(
        "/api/v1/cloudstack-targets",
        headers=auth.admin,
        json={
            "name": "cs",
            "endpoint": "http://127.0.0.1:9/client/api",
            "api_key": "AK",
            "secret_key": "very-secret-key",
            "zone_id": "z1",
            "oma_vm_id": "vm1",
        },
    )
    assert r.status_code == 201 and "secret_key" not in r.json
    for path in (
        "/api/v1/vma-appliances",
        "/api/v1/vmware-credentials",
        "/api/v1/cloudstack-targets",
    ):
        text = client.get(path, headers=auth.viewer).get_data(as_text=True)
        for secret in ("vma-secret-tok", "pa55-w0rd-lab", "very-secret-key"):
            assert secret not in text
    with app.app_context(), database.connection_context():
        stored = VmaAppliance.get().token_encrypted
        assert "vma-secret-tok" not in stored
        assert app.extensions["oma_secrets"].decrypt(stored) == "vma-secret-tok"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://x:1", "token": "t"}, "name"),
        ({"name": "a", "url": "ftp://x", "token": "t"}, "url"),
        ({"name": "a", "url": "http://u:p@x:1", "token": "t"}, "url"),
        ({"name": "a", "url": "http://x:1"}, "token"),
        ({"name": "a", "url": "http://x:1", "token": "t", "tokn": 1}, "tokn"),
        ({"name": 5, "url": "http://x:1", "token": "t"}, "name"),
    ],
)
def test_validation_names_the_field(client: Any, auth: Any, body: dict, field: str) -> None:
    r = client.post("/api/v1/vma-appliances", headers=auth.admin, json=body)
    assert r.status_code == 400
    assert r.json["error"]["field"] == field


def test_non_json_body_is_400(client: Any, auth: Any) -> None:
    r = client.post(
        "/api/v1/replications",
        headers=auth.operator,
        data="not json",
        content_type="application/json",
    )
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"


def test_duplicate_name_is_409(client: Any, auth: Any) -> None:
    _vma(client, auth)
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": "vma-1", "url": "http://127.0.0.1:9", "token": "abcd"},
    )
    assert r.status_code == 409 and r.json["error"]["field"] == "name"


def test_add_vm_creates_context_and_disks(client: Any, auth: Any) -> None:
    vma = _vma(client, auth)
    ctx = _add_vm(client, auth, vma["id"])
    assert ctx["state"] == "discovered" and ctx["vm_id"] == VM["id"]
    r = client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": vma["id"], "vcenter": "vc.lab", "vms": [VM]},
    )
    assert r.status_code == 201
    assert r.json["added"] == [] and r.json["skipped"][0]["vm_context_id"] == ctx["id"]
    detail = client.get(f"/api/v1/vm-contexts/{ctx['id']}", headers=auth.viewer).json
    assert [(d["disk_key"], d["capacity_bytes"]) for d in detail["disks"]] == [
        ("2000", 16 << 20),
        ("2001", 8 << 20),
    ]
    assert detail["events"][0]["kind"] == "context_added"
    assert detail["volumes"] == []
    bad = dict(VM, id="other", disks=[{"key": "2000"}])
    r = client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": vma["id"], "vcenter": "vc.lab", "vms": [bad]},
    )
    assert r.status_code == 400 and r.json["error"]["field"] == "vms[0].disks[0].capacity_bytes"


def test_replication_lifecycle(app: Any, client: Any, auth: Any) -> None:
    vma = _vma(client, auth)
    ctx = _add_vm(client, auth, vma["id"])
    r = client.post(
        "/api/v1/replications",
        headers=auth.operator,
        json={"vm_context_id": ctx["id"], "type": "full"},
    )
    assert r.status_code == 202, r.json
    job = r.json
    assert job["status"] == "pending" and job["type"] == "full" and job["vma_id"] == vma["id"]
    assert r.headers["Location"].endswith(f"/api/v1/replications/{job['id']}")
    # A second active job on the same VM is a conflict.
    r = client.post(
        "/api/v1/replications", headers=auth.operator, json={"vm_id": VM["id"], "vma_id": vma["id"]}
    )
    assert r.status_code == 409 and r.json["error"]["code"] == "conflict"
    # Rows only: the API did no work beyond writing the job.
    with app.app_context(), database.connection_context():
        assert ReplicationJob.select().count() == 1
    # Delete while active is refused.
    r = client.delete(f"/api/v1/replications/{job['id']}", headers=auth.operator)
    assert r.status_code == 409 and r.json["error"]["code"] == "invalid_state"
    # Stop a pending job → stopped at once; then deletable.
    r = client.post(f"/api/v1/replications/{job['id']}/stop", headers=auth.operator)
    assert r.status_code == 200 and r.json["status"] == "stopped"
    r = client.post(f"/api/v1/replications/{job['id']}/stop", headers=auth.operator)
    assert r.status_code == 409
    assert (
        client.delete(f"/api/v1/replications/{job['id']}", headers=auth.operator).status_code == 204
    )
    assert client.get(f"/api/v1/replications/{job['id']}", headers=auth.viewer).status_code == 404


def test_list_filters_pagination_and_progress(app: Any, client: Any, auth: Any) -> None:
    from labtest.oma import StubVma, progress_doc
    from oma.services.poller import ProgressPoller

    vma = _vma(client, auth)
    ids = []
    for i in range(3):
        ctx = _add_vm(client, auth, vma["id"], dict(VM, id=f"vm-{i}", name=f"vm-{i}"))
        ids.append(
            client.post(
                "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"]}
            ).json["id"]
        )
    claimed, failed = ids[0], ids[2]
    with StubVma() as stub:
        r = client.patch(
            f"/api/v1/vma-appliances/{vma['id']}", headers=auth.admin, json={"url": stub.url}
        )
        assert r.status_code == 200, r.json
        stub.set_progress(
            claimed,
            progress_doc(
                claimed, "running", [{"disk_key": "2000", "bytes_total": 100, "bytes_done": 25}]
            ),
        )
        with app.app_context(), database.connection_context():
            # the replication workflow's last step: the VMA accepted the job
            ReplicationJob.update(status="replicating").where(
                ReplicationJob.id == claimed
            ).execute()
            jobs.fail_job(failed, "test", "boom")
        poller = ProgressPoller(token_for=lambda _v: stub.token)
        try:
            assert poller.tick().updated == 1  # the worker's write path stores the progress
        finally:
            poller.close()
    page = client.get("/api/v1/replications?limit=2&offset=0", headers=auth.viewer).json
    assert page["total"] == 3 and len(page["items"]) == 2
    rest = client.get("/api/v1/replications?limit=2&offset=2", headers=auth.viewer).json
    assert sorted(j["id"] for j in page["items"] + rest["items"]) == sorted(ids)
    running = client.get("/api/v1/replications?status=replicating", headers=auth.viewer).json
    assert [j["id"] for j in running["items"]] == [claimed]
    assert running["items"][0]["vm_name"].startswith("vm-")
    active = client.get("/api/v1/replications?active=true", headers=auth.viewer).json
    assert active["total"] == 2
    r = client.get("/api/v1/replications?status=bogus", headers=auth.viewer)
    assert r.status_code == 400 and r.json["error"]["field"] == "status"
    r = client.get("/api/v1/replications?limit=0", headers=auth.viewer)
    assert r.status_code == 400 and r.json["error"]["field"] == "limit"
    prog = client.get(f"/api/v1/progress/{claimed}", headers=auth.viewer).json
    assert (prog["status"], prog["bytes_done"], prog["disks"][0]["disk_key"]) == (
        "running",
        25,
        "2000",
    )
    batch = client.get(f"/api/v1/progress?job_ids={claimed},nope", headers=auth.viewer).json
    assert [j["job_id"] for j in batch["jobs"]] == [claimed] and batch["not_found"] == ["nope"]
    detail = client.get(f"/api/v1/replications/{claimed}", headers=auth.viewer).json
    assert detail["disks"][0]["bytes_done"] == 25


def test_replication_validation(client: Any, auth: Any) -> None:
    vma = _vma(client, auth)
    ctx = _add_vm(client, auth, vma["id"])
    cases = [
        ({}, "vm_context_id"),
        ({"vm_context_id": ctx["id"], "type": "weekly"}, "type"),
        ({"vm_context_id": ctx["id"], "priority": 1}, "priority"),
    ]
    for body, field in cases:
        r = client.post("/api/v1/replications", headers=auth.operator, json=body)
        assert r.status_code == 400, body
        assert r.json["error"]["field"] == field
    # fits the schema, but no earlier sync exists to be incremental to
    body = {"vm_context_id": ctx["id"], "type": "incremental"}
    r = client.post("/api/v1/replications", headers=auth.operator, json=body)
    assert (r.status_code, r.json["error"]["field"]) == (422, "type")
    r = client.post(
        "/api/v1/replications",
        headers=auth.operator,
        json={"vm_context_id": "00000000-0000-0000-0000-000000000000"},
    )
    assert r.status_code == 404
    r = client.post("/api/v1/replications", headers=auth.operator, json={"vm_id": "unknown"})
    assert r.status_code == 404 and r.json["error"]["field"] == "vm_id"


def test_context_list_and_delete(app: Any, client: Any, auth: Any) -> None:
    vma = _vma(client, auth)
    ctx = _add_vm(client, auth, vma["id"])
    listing = client.get("/api/v1/vm-contexts?state=discovered", headers=auth.viewer).json
    assert listing["total"] == 1 and listing["items"][0]["disks"][0]["disk_key"] == "2000"
    job = client.post(
        "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"]}
    ).json
    r = client.delete(f"/api/v1/vm-contexts/{ctx['id']}", headers=auth.operator)
    assert r.status_code == 409
    with app.app_context(), database.connection_context():
        jobs.fail_job(job["id"], "test", "x")
        assert contexts.get_context(ctx["id"]).state == "failed"
    assert (
        client.delete(f"/api/v1/vm-contexts/{ctx['id']}", headers=auth.operator).status_code == 204
    )


def test_internal_errors_are_json_500_without_traceback(app: Any, auth: Any) -> None:
    @app.get("/api/v1/_boom")
    def _boom() -> Any:
        raise RuntimeError("secret internals")

    r = app.test_client().get("/api/v1/_boom", headers=auth.viewer)
    assert r.status_code == 500
    assert r.json["error"]["code"] == "internal"
    assert "secret internals" not in r.get_data(as_text=True)


def test_openapi_lists_every_resource(client: Any, auth: Any) -> None:
    doc = client.get("/api/v1/openapi.json", headers=auth.viewer).json
    assert doc["openapi"].startswith("3.")
    for path in (
        "/api/v1/replications",
        "/api/v1/replications/{job_id}/stop",
        "/api/v1/vm-contexts/{context_id}",
        "/api/v1/discovery/add",
        "/api/v1/vma-appliances",
        "/api/v1/cloudstack-targets/{target_id}/networks",
        "/api/v1/vmware-credentials",
        "/api/v1/progress",
        "/health",
    ):
        assert path in doc["paths"], path
    assert doc["paths"]["/health"]["get"]["security"] == []

    def request_schema(path: str) -> dict[str, Any]:
        schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        ref = schema["schema"].get("$ref", "")
        return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema["schema"]

    schema = request_schema("/api/v1/replications")
    assert schema["properties"]["type"]["enum"] == ["auto", "full", "incremental"]
    assert request_schema("/api/v1/vma-appliances")["properties"]["token"]["writeOnly"] is True
    json.dumps(doc)


def test_database_down_is_503_json(tmp_path: Any, config_overrides: dict[str, Any]) -> None:
    from oma.api import create_app
    from oma.database import init_db

    app = create_app({**config_overrides, "TESTING": True})
    # Point the live app at a PostgreSQL server that does not exist.
    init_db("postgresql://nobody@127.0.0.1:1/none")
    client = app.test_client()
    r = client.get("/health")
    assert r.status_code == 503 and r.json["status"] == "error"
    r = client.get("/api/v1/replications", headers={"Authorization": "Bearer x"})
    assert r.status_code == 503 and r.json["error"]["code"] == "database_unavailable"


def test_gunicorn_factory_string_builds_the_app(
    monkeypatch: pytest.MonkeyPatch, config_overrides: dict[str, Any]
) -> None:
    """gunicorn's 'oma.api:create_app()' form: no arguments, settings from the environment."""
    from gunicorn.util import import_app

    for key, value in config_overrides.items():
        monkeypatch.setenv(f"OMA_{key}", value)
    app = import_app("oma.api:create_app()")
    assert app.test_client().get("/health").status_code == 200


def test_cleanup_and_delete_with_replicas_queue_a_workflow(
    app: Any, client: Any, auth: Any
) -> None:
    from oma.database.models import ReplicaVolume, Workflow

    vma = _vma(client, auth)
    ctx = _add_vm(client, auth, vma["id"])
    with app.app_context(), database.connection_context():
        ReplicaVolume.create(
            context=ctx["id"],
            disk_key="2000",
            size_bytes=16 << 20,
            cloudstack_volume_id="cs-vol-1",
            state="attached",
        )
    detail = client.get(f"/api/v1/vm-contexts/{ctx['id']}", headers=auth.viewer).json
    assert detail["volumes"][0]["cloudstack_volume_id"] == "cs-vol-1"
    assert (
        client.post(f"/api/v1/vm-contexts/{ctx['id']}/cleanup", headers=auth.viewer).status_code
        == 403
    )
    r = client.post(f"/api/v1/vm-contexts/{ctx['id']}/cleanup", headers=auth.operator)
    assert r.status_code == 202 and r.json["kind"] == "cleanup"
    assert [s["name"] for s in r.json["steps"]] == ["check", "exports", "volumes", "forget"]
    r = client.delete(f"/api/v1/vm-contexts/{ctx['id']}", headers=auth.operator)
    assert r.status_code == 202 and r.json["params"] == {"delete_context": True}
    wf = client.get(r.headers["Location"], headers=auth.viewer).json
    assert wf["status"] == "pending" and wf["vm_context_id"] == ctx["id"]
    listing = client.get(
        f"/api/v1/workflows?vm_context_id={ctx['id']}&kind=cleanup", headers=auth.viewer
    ).json
    assert listing["total"] == 2
    # The context stays until the worker has removed its volumes.
    assert client.get(f"/api/v1/vm-contexts/{ctx['id']}", headers=auth.viewer).status_code == 200
    with app.app_context(), database.connection_context():
        assert Workflow.select().count() == 2


def test_no_replication_of_a_failed_over_vm(app: Any, client: Any, auth: Any) -> None:
    vma = _vma(client, auth)
    ctx = _add_vm(client, auth, vma["id"])
    with app.app_context(), database.connection_context():
        contexts.set_state(ctx["id"], "failed_over_live")
    r = client.post(
        "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"]}
    )
    assert r.status_code == 409 and r.json["error"]["code"] == "invalid_state"


def test_patch_rotates_secrets_and_validates(app: Any, client: Any, auth: Any) -> None:
    vma = _vma(client, auth)
    r = client.patch(
        f"/api/v1/vma-appliances/{vma['id']}",
        headers=auth.admin,
        json={"token": "rotated-token-2", "url": "http://127.0.0.1:10"},
    )
    assert r.status_code == 200 and r.json["url"] == "http://127.0.0.1:10"
    with app.app_context(), database.connection_context():
        stored = VmaAppliance.get_by_id(vma["id"]).token_encrypted
        assert app.extensions["oma_secrets"].decrypt(stored) == "rotated-token-2"
    assert (
        client.patch(
            f"/api/v1/vma-appliances/{vma['id']}", headers=auth.operator, json={"url": "http://x:1"}
        ).status_code
        == 403
    )
    r = client.patch(
        f"/api/v1/vma-appliances/{vma['id']}", headers=auth.admin, json={"url": "nope"}
    )
    assert r.status_code == 400 and r.json["error"]["field"] == "url"
    _vma(client, auth, "vma-2")
    r = client.patch(
        f"/api/v1/vma-appliances/{vma['id']}", headers=auth.admin, json={"name": "vma-2"}
    )
    assert r.status_code == 409 and r.json["error"]["field"] == "name"
    r = client.patch("/api/v1/vmware-credentials/none", headers=auth.admin, json={})
    assert r.status_code == 404
