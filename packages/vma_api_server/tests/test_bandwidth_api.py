"""``GET|PUT /api/v1/jobs/{id}/bandwidth``: the limit file migratekit re-reads while copying."""

from __future__ import annotations

import json
import stat

import pytest

from migratekit.copy._throttle import read_limit
from migration_common import parse_disk_update
from vma.services.bandwidth import LIMIT_FILE
from vma.services.store import Job, database


def _make_job(job_id: str, status: str = "running") -> None:
    with database.connection_context():
        Job.create(job_id=job_id, vm_id=f"vm-{job_id}", request="{}", status=status)


def test_put_writes_the_limit_file_migratekit_reads(app, client, auth) -> None:
    _make_job("j1")
    url = "/api/v1/jobs/j1/bandwidth"
    assert client.get(url, headers=auth).get_json()["limit_bps"] is None
    res = client.put(url, json={"limit_bps": 52428800}, headers=auth)
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["limit_bps"] == 52428800
    path = app.extensions["vma"].runner.job_dir("j1") / LIMIT_FILE
    assert read_limit(path) == 52428800  # the very parser migratekit uses
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert client.get(url, headers=auth).get_json()["limit_bps"] == 52428800
    assert client.put(url, json={"limit_bps": None}, headers=auth).status_code == 200
    assert read_limit(path) is None
    assert client.put(url, json={"limit_bps": 0}, headers=auth).get_json()["limit_bps"] is None
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit_bps": -1}, "limit_bps"),
        ({"limit_bps": "50MiB"}, "limit_bps"),
        ({}, "limit_bps"),
        ({"limit_bps": 1, "rate": 2}, "rate"),
    ],
)
def test_bad_limit_names_the_field(client, auth, body, field) -> None:
    _make_job("j2")
    res = client.put("/api/v1/jobs/j2/bandwidth", json=body, headers=auth)
    assert res.status_code == 422
    assert res.get_json()["error"]["field"] == field


def test_unknown_or_finished_job(client, auth) -> None:
    res = client.put("/api/v1/jobs/nope/bandwidth", json={"limit_bps": 1}, headers=auth)
    assert res.status_code == 404 and res.get_json()["error"]["code"] == "job_not_found"
    _make_job("done", status="completed")
    res = client.put("/api/v1/jobs/done/bandwidth", json={"limit_bps": 1}, headers=auth)
    assert res.status_code == 409 and res.get_json()["error"]["code"] == "job_finished"


def test_progress_carries_the_limit_and_openapi_lists_the_route(client, auth) -> None:
    with database.connection_context():
        from vma.services.store import JobDisk

        job = Job.create(job_id="j3", vm_id="vm-j3", request="{}", status="running")
        JobDisk.create(job=job, position=0, disk_key="2000", target_uri="nbd://x/y")
    update = {"disk_key": "2000", "bytes_total": 10, "bytes_done": 5, "seq": 1, "limit_bps": 1024}
    assert client.post("/api/v1/progress/j3/update", json=update, headers=auth).status_code < 300
    doc = client.get("/api/v1/progress/j3", headers=auth).get_json()
    assert parse_disk_update(json.dumps(doc["disks"][0])).limit_bps == 1024
    paths = client.get("/api/v1/openapi.json", headers=auth).get_json()["paths"]
    assert set(paths["/api/v1/jobs/{job_id}/bandwidth"]) == {"get", "put"}
