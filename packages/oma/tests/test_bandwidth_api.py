"""Bandwidth limits through the HTTP API: global, per VMA, per job; 400s naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from oma.database import database
from oma.database.models import BandwidthLimit, ReplicationJob

MiB = 1 << 20
OFFICE = {
    "rate_bps": None,
    "timezone": "Europe/Paris",
    "windows": [{"days": ["mon-fri"], "start": "08:00", "end": "18:00", "rate_bps": 50 * MiB}],
}


def _vma(client: Any, auth: Any, name: str = "vma-1") -> str:
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": name, "url": "http://127.0.0.1:9", "token": "vma-secret-tok"},
    )
    assert r.status_code == 201, r.json
    return r.json["id"]


def _job(client: Any, auth: Any, vma_id: str, n: int = 1) -> str:
    vm = {
        "id": f"4200aaaa-0000-4000-8000-00000000000{n}",
        "name": f"web-{n}",
        "path": f"/DC0/vm/web-{n}",
        "disks": [{"key": "2000", "capacity_bytes": 1 << 20}],
    }
    r = client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": vma_id, "vcenter": "vc.lab", "vms": [vm]},
    )
    assert r.status_code == 201, r.json
    r = client.post(
        "/api/v1/replications",
        headers=auth.operator,
        json={"vm_context_id": r.json["added"][0]["id"]},
    )
    assert r.status_code == 202, r.json
    return r.json["id"]


def test_global_policy_round_trip(client: Any, auth: Any) -> None:
    r = client.get("/api/v1/bandwidth", headers=auth.viewer)
    assert r.status_code == 200 and r.json["policy"] is None
    r = client.put("/api/v1/bandwidth", headers=auth.operator, json=OFFICE)
    assert r.status_code == 200, r.json
    assert r.json["policy"]["windows"][0]["days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert r.json["policy"]["timezone"] == "Europe/Paris"
    assert client.get("/api/v1/bandwidth", headers=auth.viewer).json["policy"] == r.json["policy"]
    assert client.put("/api/v1/bandwidth", headers=auth.viewer, json=OFFICE).status_code == 403
    assert client.delete("/api/v1/bandwidth", headers=auth.operator).status_code == 204
    assert client.get("/api/v1/bandwidth", headers=auth.viewer).json["policy"] is None


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"rate_bps": -1}, 400, "rate_bps"),
        ({"rate_bps": "50MiB"}, 400, "rate_bps"),
        ({"timezone": "Nowhere/Land"}, 422, "timezone"),
        (
            {"windows": [{"days": ["mon"], "start": "18:00", "end": "08:00", "rate_bps": 1}]},
            422,
            "windows[0].end",
        ),
        (
            {"windows": [{"days": ["mo"], "start": "08:00", "end": "09:00", "rate_bps": 1}]},
            400,
            "windows[0].days[0]",
        ),
        (
            {"windows": [{"days": ["mon"], "start": "8am", "end": "09:00", "rate_bps": 1}]},
            400,
            "windows[0].start",
        ),
        (
            {"windows": [{"days": ["mon"], "start": "08:00", "end": "09:00", "rate_bps": -5}]},
            400,
            "windows[0].rate_bps",
        ),
        ({"windows": [{"days": ["mon"], "start": "08:00", "end": "09:00"}]}, 400, None),
        ({"rate": 5}, 400, "rate"),
    ],
)
def test_bad_input_names_the_field(
    client: Any, auth: Any, body: Any, status: int, field: str | None
) -> None:
    for url in ("/api/v1/bandwidth", f"/api/v1/vma-appliances/{_vma(client, auth)}/bandwidth"):
        r = client.put(url, headers=auth.operator, json=body)
        assert r.status_code == status, r.json
        assert r.json["error"]["field"] == (field or "windows[0].rate_bps"), r.json
        client.delete(url.replace("/bandwidth", ""), headers=auth.admin)
    r = client.put("/api/v1/bandwidth", headers=auth.operator, data="[1]")
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"


def test_vma_and_job_policies_and_the_effective_limit(client: Any, auth: Any) -> None:
    vma = _vma(client, auth)
    j1, j2 = _job(client, auth, vma, 1), _job(client, auth, vma, 2)
    assert (
        client.put(
            f"/api/v1/vma-appliances/{vma}/bandwidth",
            headers=auth.operator,
            json={"rate_bps": 20 * MiB},
        ).status_code
        == 200
    )
    r = client.put(
        f"/api/v1/replications/{j1}/bandwidth", headers=auth.operator, json={"rate_bps": 4 * MiB}
    )
    assert r.status_code == 200 and r.json["policy"]["rate_bps"] == 4 * MiB
    assert r.json["effective"] is None  # pending: not replicating yet
    with database.connection_context():
        ReplicationJob.update(status="replicating").where(ReplicationJob.id.in_([j1, j2])).execute()
    e1 = client.get(f"/api/v1/replications/{j1}/bandwidth", headers=auth.viewer).json["effective"]
    e2 = client.get(f"/api/v1/replications/{j2}/bandwidth", headers=auth.viewer).json["effective"]
    assert e1 == {
        "effective_bps": 4 * MiB,
        "job_bps": 4 * MiB,
        "vma_share_bps": 10 * MiB,
        "global_share_bps": None,
    }
    assert e2["effective_bps"] == 10 * MiB
    assert (
        client.get("/api/v1/vma-appliances/nope/bandwidth", headers=auth.viewer).status_code == 404
    )
    assert client.get("/api/v1/replications/nope/bandwidth", headers=auth.viewer).status_code == 404
    with database.connection_context():
        ReplicationJob.update(status="completed").where(ReplicationJob.id == j2).execute()
    r = client.put(f"/api/v1/replications/{j2}/bandwidth", headers=auth.operator, json={})
    assert r.status_code == 409 and r.json["error"]["field"] == "job_id"
    # one row per scope
    with database.connection_context():
        assert BandwidthLimit.select().where(BandwidthLimit.scope == "vma").count() == 1


def test_openapi_documents_put_with_its_body(client: Any, auth: Any) -> None:
    doc = client.get("/api/v1/openapi.json", headers=auth.viewer).json
    for path in (
        "/api/v1/bandwidth",
        "/api/v1/vma-appliances/{appliance_id}/bandwidth",
        "/api/v1/replications/{job_id}/bandwidth",
    ):
        ops = doc["paths"][path]
        assert set(ops) == {"get", "put", "delete"}
        ref = ops["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(schema["properties"]) == {"rate_bps", "timezone", "windows"}
