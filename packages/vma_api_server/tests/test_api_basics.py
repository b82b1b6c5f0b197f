"""Auth, JSON errors, body validation, progress updates and batched progress (test client)."""

from __future__ import annotations

import json

import pytest

from migration_common import parse_job_progress
from vma.services.store import Job, JobDisk, database

GOOD_BODY = {
    "job_id": "job-1",
    "vm_id": "vm-1",
    "disks": [
        {"disk_key": "2000", "target_uri": "nbd://127.0.0.1:10100/v", "previous_change_id": None}
    ],
    "options": {"verify": False, "target_is_zero": False},
}


def _make_job(job_id: str, status: str = "running", disks=("2000",)) -> None:
    with database.connection_context():
        job = Job.create(job_id=job_id, vm_id=f"vm-{job_id}", request="{}", status=status)
        for pos, key in enumerate(disks):
            JobDisk.create(job=job, position=pos, disk_key=key, target_uri="nbd://x/y")


def test_health_is_public(client):
    res = client.get("/api/v1/health")
    assert res.status_code == 200
    assert res.get_json()["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/jobs"),
        ("post", "/api/v1/replicate"),
        ("get", "/api/v1/progress/x"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/progress/x/update"),
    ],
)
def test_unauthenticated_is_401(client, method, path):
    res = getattr(client, method)(path)
    assert res.status_code == 401
    assert res.get_json()["error"]["code"] == "unauthorized"
    assert res.headers["WWW-Authenticate"] == "Bearer"
    res = getattr(client, method)(path, headers={"Authorization": "Bearer wrong-token-123456"})
    assert res.status_code == 401


def test_unknown_route_is_json_404(client, auth):
    res = client.get("/nope", headers=auth)
    assert res.status_code == 404
    assert res.get_json()["error"]["code"] == "not_found"


def test_openapi_lists_the_routes(client, auth):
    doc = client.get("/api/v1/openapi.json", headers=auth).get_json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/api/v1/replicate",
        "/api/v1/progress",
        "/api/v1/progress/{job_id}/update",
        "/api/v1/vms/{vm_id}/power-off",
        "/api/v1/jobs/{job_id}/stop",
    ):
        assert path in doc["paths"]
    assert "JobProgress" in doc["components"]["schemas"]


def test_replicate_rejects_non_json(client, auth):
    res = client.post(
        "/api/v1/replicate", data="not json", headers=auth, content_type="application/json"
    )
    assert res.status_code == 400
    assert res.get_json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("vm_id"), "vm_id"),
        (lambda b: b.update(job_id="../etc"), "job_id"),
        (lambda b: b.update(disks=[]), "disks"),
        (lambda b: b["disks"][0].update(target_uri="http://x"), "disks.0.target_uri"),
        (lambda b: b["disks"][0].pop("disk_key"), "disks.0.disk_key"),
        (lambda b: b["options"].update(verify="maybe"), "options.verify"),
        (lambda b: b.update(extra=1), "extra"),
        (lambda b: b["disks"].append(dict(b["disks"][0])), "disks"),
    ],
)
def test_replicate_bad_body_names_the_field(client, auth, mutate, field):
    body = json.loads(json.dumps(GOOD_BODY))
    mutate(body)
    res = client.post("/api/v1/replicate", json=body, headers=auth)
    assert res.status_code == 422, res.get_json()
    err = res.get_json()["error"]
    assert err["field"] == field
    assert err["code"] == "invalid_field"


def test_replicate_without_vcenter_is_409(client, auth):
    res = client.post("/api/v1/replicate", json=GOOD_BODY, headers=auth)
    assert res.status_code == 409
    assert res.get_json()["error"]["code"] == "vcenter_not_configured"


def test_progress_update_unknown_job_is_404(client, auth):
    res = client.post("/api/v1/progress/nope/update", json={"disk_key": "2000"}, headers=auth)
    assert res.status_code == 404
    assert res.get_json()["error"]["code"] == "job_not_found"


def test_progress_update_validates_and_orders_by_seq(client, auth):
    _make_job("j1")
    url = "/api/v1/progress/j1/update"
    bad = client.post(
        url, json={"disk_key": "2000", "bytes_total": 1, "bytes_done": 5}, headers=auth
    )
    assert bad.status_code == 422
    assert "bytes_done" in bad.get_json()["error"]["message"]
    res = client.post(url, json={"disk_key": "9999", "seq": 1}, headers=auth)
    assert res.status_code == 422
    assert res.get_json()["error"]["field"] == "disk_key"

    upd = {"disk_key": "2000", "bytes_total": 100, "bytes_done": 50, "seq": 5}
    assert client.post(url, json=upd, headers=auth).get_json()["accepted"] is True
    stale = dict(upd, bytes_done=10, seq=4)
    res = client.post(url, json=stale, headers=auth).get_json()
    assert res == {"job_id": "j1", "accepted": False, "reason": "stale seq"}
    doc = parse_job_progress(client.get("/api/v1/progress/j1", headers=auth).get_json())
    assert doc.bytes_done == 50 and doc.percent == 50.0 and doc.status.value == "running"


def test_batched_progress_lists_not_found(client, auth):
    _make_job("a")
    _make_job("b", status="queued")
    res = client.get("/api/v1/progress?job_ids=a,zzz,b", headers=auth)
    assert res.status_code == 200
    data = res.get_json()
    assert [j["job_id"] for j in data["jobs"]] == ["a", "b"]
    assert data["not_found"] == ["zzz"]
    for doc in data["jobs"]:
        parse_job_progress(doc)
    res = client.get("/api/v1/progress", headers=auth)
    assert res.status_code == 400
    assert res.get_json()["error"]["field"] == "job_ids"


def test_get_job_and_unknown_job(client, auth):
    _make_job("j2", status="queued")
    doc = client.get("/api/v1/jobs/j2", headers=auth).get_json()
    assert set(doc) == {
        "job_id",
        "vm_id",
        "status",
        "pid",
        "error",
        "created_at",
        "finished_at",
        "progress",
    }
    assert doc["status"] == "queued"
    res = client.get("/api/v1/jobs/none", headers=auth)
    assert res.status_code == 404


def test_stop_queued_job(client, auth):
    _make_job("j3", status="queued")
    res = client.post("/api/v1/jobs/j3/stop", headers=auth)
    assert res.status_code == 200
    assert res.get_json()["status"] == "stopped"
    # a finished job ignores further updates
    upd = {"disk_key": "2000", "seq": 9}
    res = client.post("/api/v1/progress/j3/update", json=upd, headers=auth).get_json()
    assert res["accepted"] is False


def test_job_token_opens_only_its_progress_update(client):
    from vma.services.progress import hash_token

    _make_job("jt")
    _make_job("other")
    with database.connection_context():
        Job.update(token_hash=hash_token("job-token-abcdefghijkl")).where(
            Job.job_id == "jt"
        ).execute()
    job_auth = {"Authorization": "Bearer job-token-abcdefghijkl"}
    upd = {"disk_key": "2000", "seq": 1}
    assert client.post("/api/v1/progress/jt/update", json=upd, headers=job_auth).status_code == 200
    assert (
        client.post("/api/v1/progress/other/update", json=upd, headers=job_auth).status_code == 401
    )
    assert client.get("/api/v1/progress/jt", headers=job_auth).status_code == 401


def test_oversized_body_is_json_413(client, auth):
    res = client.post(
        "/api/v1/replicate",
        data=b"{" + b" " * (2 << 20) + b"}",
        headers=auth,
        content_type="application/json",
    )
    assert res.status_code == 413
    assert res.get_json()["error"]["code"] == "request_entity_too_large"


def test_list_jobs_filters_and_limits(client, auth):
    _make_job("l1", status="queued")
    _make_job("l2", status="running")
    jobs = client.get("/api/v1/jobs?status=queued", headers=auth).get_json()["jobs"]
    assert [j["job_id"] for j in jobs] == ["l1"]
    assert len(client.get("/api/v1/jobs?limit=1", headers=auth).get_json()["jobs"]) == 1
    res = client.get("/api/v1/jobs?limit=0", headers=auth)
    assert res.status_code == 400 and res.get_json()["error"]["field"] == "limit"
    res = client.get("/api/v1/jobs?status=sleeping", headers=auth)
    assert res.status_code == 400 and res.get_json()["error"]["field"] == "status"


def test_job_log_of_job_without_log(client, auth):
    _make_job("lg", status="queued")
    doc = client.get("/api/v1/jobs/lg/log", headers=auth).get_json()
    assert doc == {"job_id": "lg", "log": "", "truncated": False, "size": 0}
    res = client.get("/api/v1/jobs/lg/log?tail_bytes=0", headers=auth)
    assert res.status_code == 400 and res.get_json()["error"]["field"] == "tail_bytes"
    assert client.get("/api/v1/jobs/none/log", headers=auth).status_code == 404


def test_job_log_of_pruned_job_is_410(app, client, auth):
    from datetime import timedelta

    from migration_common import rfc3339, utcnow

    long_ago = rfc3339(utcnow() - timedelta(days=30))
    _make_job("old", status="completed")
    _make_job("fresh", status="failed")
    with database.connection_context():
        Job.update(started_at=long_ago, finished_at=long_ago).where(Job.job_id == "old").execute()
        Job.update(started_at=long_ago, finished_at=rfc3339(utcnow())).where(
            Job.job_id == "fresh"
        ).execute()
    runner = app.extensions["vma"].runner
    for job_id in ("old", "fresh"):
        runner.job_dir(job_id).mkdir(parents=True)
        (runner.job_dir(job_id) / "migratekit.log").write_text(f"log of {job_id}\n")
    assert client.get("/api/v1/jobs/old/log", headers=auth).get_json()["log"] == "log of old\n"

    with database.connection_context():
        assert runner.prune().removed == 1
    res = client.get("/api/v1/jobs/old/log", headers=auth)
    assert res.status_code == 410
    err = res.get_json()
    assert set(err) == {"error"} and err["error"]["code"] == "log_pruned"
    assert err["error"]["field"] == "job_id"
    assert "job old" in err["error"]["message"]
    assert "VMA_JOB_RETENTION_DAYS=14" in err["error"]["message"]
    assert client.get("/api/v1/jobs/old", headers=auth).get_json()["status"] == "completed"
    assert client.get("/api/v1/jobs/fresh/log", headers=auth).get_json()["log"] == "log of fresh\n"
    assert client.get("/api/v1/jobs/none/log", headers=auth).status_code == 404
    doc = client.get("/api/v1/openapi.json", headers=auth).get_json()
    assert {"200", "404", "410"} <= set(
        doc["paths"]["/api/v1/jobs/{job_id}/log"]["get"]["responses"]
    )
