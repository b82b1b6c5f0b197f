"""Groups, schedules, run-now and runs through the HTTP API (Flask's test client)."""

from __future__ import annotations

from typing import Any

from oma.database import database
from oma.database.models import ReplicationJob


def _vma(client: Any, auth: Any) -> str:
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": "vma-1", "url": "http://127.0.0.1:9", "token": "vma-secret-tok"},
    )
    assert r.status_code == 201, r.json
    return r.json["id"]


def _vms(client: Any, auth: Any, vma_id: str, n: int) -> list[str]:
    vms = [
        {
            "id": f"4200aaaa-0000-4000-8000-00000000000{i}",
            "name": f"web-{i}",
            "path": f"/DC0/vm/web-{i}",
            "host": "esxi-01",
            "disks": [{"key": "2000", "capacity_bytes": 1 << 20, "datastore": "ds-1"}],
        }
        for i in range(n)
    ]
    r = client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": vma_id, "vcenter": "vc.lab", "vms": vms},
    )
    assert r.status_code == 201, r.json
    return [a["id"] for a in r.json["added"]]


def _error(r: Any, status: int, field: str | None) -> str:
    assert r.status_code == status, r.json
    assert r.json["error"]["field"] == field, r.json
    return r.json["error"]["message"]


def test_groups_crud_and_one_group_per_vm(client: Any, auth: Any) -> None:
    a, b, c = _vms(client, auth, _vma(client, auth), 3)
    r = client.post(
        "/api/v1/groups",
        headers=auth.operator,
        json={"name": "wave-1", "priority": 10, "max_concurrent": 3, "vm_context_ids": [a, b]},
    )
    assert r.status_code == 201, r.json
    wave1 = r.json
    assert (wave1["priority"], wave1["max_concurrent"], wave1["member_count"]) == (10, 3, 2)
    assert sorted(m["name"] for m in wave1["members"]) == ["web-0", "web-1"]

    wave2 = client.post("/api/v1/groups", headers=auth.operator, json={"name": "wave-2"}).json
    assert (wave2["priority"], wave2["max_concurrent"]) == (0, 0)
    msg = _error(
        client.post(
            f"/api/v1/groups/{wave2['id']}/members",
            headers=auth.operator,
            json={"vm_context_ids": [c, a]},
        ),
        409,
        "vm_context_ids",
    )
    assert "web-0 is already in group wave-1" in msg
    assert client.get(f"/api/v1/groups/{wave2['id']}", headers=auth.viewer).json["members"] == []
    msg = _error(
        client.post(
            f"/api/v1/groups/{wave2['id']}/members",
            headers=auth.operator,
            json={"vm_context_ids": [c, "no-such-vm"]},
        ),
        422,
        "vm_context_ids[1]",
    )
    assert "unknown VM context no-such-vm" in msg
    r = client.post(
        f"/api/v1/groups/{wave2['id']}/members", headers=auth.operator, json={"vm_context_ids": [c]}
    )
    assert r.status_code == 200 and [m["name"] for m in r.json["members"]] == ["web-2"]

    _error(
        client.post("/api/v1/groups", headers=auth.operator, json={"name": "wave-1"}), 409, "name"
    )
    _error(
        client.post(
            "/api/v1/groups", headers=auth.operator, json={"name": "x", "max_concurrent": -1}
        ),
        400,
        "max_concurrent",
    )
    _error(
        client.post("/api/v1/groups", headers=auth.operator, json={"name": "x", "prio": 1}),
        400,
        "prio",
    )
    assert client.post("/api/v1/groups", headers=auth.viewer, json={"name": "x"}).status_code == 403

    r = client.patch(
        f"/api/v1/groups/{wave1['id']}", headers=auth.operator, json={"max_concurrent": 5}
    )
    assert r.status_code == 200 and r.json["max_concurrent"] == 5
    listed = client.get("/api/v1/groups", headers=auth.viewer).json["items"]
    assert [(g["name"], g["member_count"]) for g in listed] == [("wave-1", 2), ("wave-2", 1)]

    r = client.delete(f"/api/v1/groups/{wave1['id']}/members/{b}", headers=auth.operator)
    assert r.status_code == 204
    r = client.delete(f"/api/v1/groups/{wave1['id']}/members/{b}", headers=auth.operator)
    assert r.status_code == 404
    assert client.delete(f"/api/v1/groups/{wave2['id']}", headers=auth.operator).status_code == 204
    assert client.get(f"/api/v1/groups/{wave2['id']}", headers=auth.viewer).status_code == 404


def test_schedule_validation_names_the_field(client: Any, auth: Any) -> None:
    (ctx,) = _vms(client, auth, _vma(client, auth), 1)

    def post(**body: Any) -> Any:
        return client.post(
            "/api/v1/schedules",
            headers=auth.operator,
            json={"name": "nightly", "cron": "0 2 * * *", "vm_context_id": ctx, **body},
        )

    # a cron that does not parse fits the schema (a string): 422
    assert "expected 5 fields" in _error(post(cron="0 2 * *"), 422, "cron")
    assert "higher than the maximum" in _error(post(cron="61 2 * * *"), 422, "cron")
    assert "0 and 7 are Sunday" in _error(post(cron="0 2 * * 9"), 422, "cron")
    # the timezones are an enum of the schema: 400
    assert "unknown timezone 'Mars/Olympus'" in _error(
        post(timezone="Mars/Olympus"), 400, "timezone"
    )
    assert "unknown VM context nope" in _error(post(vm_context_id="nope"), 422, "vm_context_id")
    assert "exactly one" in _error(post(group_id="g"), 400, "vm_context_id")
    body = {"name": "nightly", "cron": "0 2 * * *", "group_id": "nope"}
    r = client.post("/api/v1/schedules", headers=auth.operator, json=body)
    assert "unknown group nope" in _error(r, 422, "group_id")
    _error(post(type="sometimes"), 400, "type")
    _error(post(enabled="yes"), 400, "enabled")
    _error(post(every="day"), 400, "every")

    r = post(timezone="Europe/Paris", cron="0  2 * * 1-5")
    assert r.status_code == 201, r.json
    s = r.json
    assert (s["cron"], s["timezone"], s["enabled"], s["skip_if_running"], s["type"]) == (
        "0 2 * * 1-5",
        "Europe/Paris",
        True,
        True,
        "auto",
    )
    assert s["target"] == {"kind": "vm", "id": ctx, "name": "web-0"}
    assert s["next_run_at"] is not None and s["last_run"] is None
    _error(post(), 409, "name")

    r = client.patch(
        f"/api/v1/schedules/{s['id']}", headers=auth.operator, json={"timezone": "Nowhere/X"}
    )
    _error(r, 400, "timezone")
    r = client.patch(f"/api/v1/schedules/{s['id']}", headers=auth.operator, json={"enabled": False})
    assert r.status_code == 200 and r.json["enabled"] is False and r.json["next_run_at"] is None


def test_run_now_creates_a_job_then_skips_the_busy_vm(client: Any, auth: Any) -> None:
    vma_id = _vma(client, auth)
    ids = _vms(client, auth, vma_id, 2)
    group = client.post(
        "/api/v1/groups", headers=auth.operator, json={"name": "wave-1", "vm_context_ids": ids}
    ).json
    s = client.post(
        "/api/v1/schedules",
        headers=auth.operator,
        json={"name": "wave-1 nightly", "cron": "0 2 * * *", "group_id": group["id"]},
    ).json
    first = client.post(f"/api/v1/schedules/{s['id']}/run-now", headers=auth.operator)
    assert first.status_code == 202, first.json
    run = first.json
    assert (run["trigger"], run["eligible"], run["created"], run["skipped"]) == ("manual", 2, 2, 0)
    assert {v["result"] for v in run["vms"]} == {"created"}
    assert {v["job_status"] for v in run["vms"]} == {"pending"}
    with database.connection_context():
        assert ReplicationJob.select().count() == 2

    second = client.post(f"/api/v1/schedules/{s['id']}/run-now", headers=auth.operator).json
    assert (second["created"], second["skipped"]) == (0, 2)
    assert all(v["reason"].startswith("VM has an active job (") for v in second["vms"])
    assert second["finished_at"] is not None  # nothing left to wait for
    with database.connection_context():
        assert ReplicationJob.select().count() == 2

    runs = client.get(f"/api/v1/schedules/{s['id']}/runs", headers=auth.viewer).json
    assert runs["total"] == 2 and runs["items"][0]["id"] == second["id"]
    detail = client.get(f"/api/v1/schedules/runs/{run['id']}", headers=auth.viewer).json
    assert [v["vm_name"] for v in detail["vms"]] == ["web-0", "web-1"]
    assert client.get("/api/v1/schedules/runs?limit=1", headers=auth.viewer).json["total"] == 2
    listed = client.get("/api/v1/schedules", headers=auth.viewer).json["items"]
    assert listed[0]["last_run"]["id"] == second["id"]
    assert client.get("/api/v1/schedules/runs/nope", headers=auth.viewer).status_code == 404

    # a group cannot go while a schedule targets it
    msg = _error(
        client.delete(f"/api/v1/groups/{group['id']}", headers=auth.operator), 409, "group_id"
    )
    assert "wave-1 nightly" in msg
    assert client.delete(f"/api/v1/schedules/{s['id']}", headers=auth.operator).status_code == 204
    assert client.delete(f"/api/v1/groups/{group['id']}", headers=auth.operator).status_code == 204


def _resolve(doc: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    """The request body schema of ``operation``, its $ref followed."""
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    ref = schema.get("$ref", "")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_openapi_documents_the_wave_bodies(client: Any, auth: Any) -> None:
    doc = client.get("/api/v1/openapi.json", headers=auth.viewer).json
    paths = doc["paths"]
    for path, method in (
        ("/api/v1/groups", "post"),
        ("/api/v1/groups/{group_id}", "patch"),
        ("/api/v1/groups/{group_id}/members", "post"),
        ("/api/v1/schedules", "post"),
        ("/api/v1/schedules/{schedule_id}", "patch"),
    ):
        schema = _resolve(doc, paths[path][method])
        assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert "cron" in _resolve(doc, paths["/api/v1/schedules"]["post"])["required"]
    assert "post" in paths["/api/v1/schedules/{schedule_id}/run-now"]
    assert "get" in paths["/api/v1/schedules/runs/{run_id}"]
