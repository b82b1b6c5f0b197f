"""``GET /metrics`` of the VMA: jobs, bytes moved, throughput and vCenter reachability."""

from __future__ import annotations

import json
import socket

from prometheus_client.parser import text_string_to_metric_families

from vma.services.progress import apply_update
from vma.services.store import Job, JobDisk, database
from vma_api_server import create_app

from .conftest import TOKEN

MiB = 1 << 20


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition (parsed by prometheus_client)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def scrape(client, auth) -> dict:
    res = client.get("/metrics", headers=auth)
    assert res.status_code == 200, res.data
    assert res.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(res.get_data(as_text=True))


def _disk(job: Job, key: str, sync_type: str, done: int, bps: float, status: str) -> None:
    progress = {
        "disk_key": key,
        "sync_type": sync_type,
        "phase": "copy" if status == "running" else "done",
        "status": status,
        "bytes_total": 64 * MiB,
        "bytes_done": done,
        "bytes_written": done,
        "bytes_zeroed": 0,
        "throughput_bps": bps,
        "seq": 3,
    }
    JobDisk.create(
        job=job,
        position=int(key) % 10,
        disk_key=key,
        target_uri="nbd://127.0.0.1:1/x",
        progress=json.dumps(progress),
        seq=3,
    )


def _seed() -> None:
    with database.connection_context():
        running = Job.create(job_id="job-run", vm_id="vm-1", request="{}", status="running")
        _disk(running, "2000", "full", 16 * MiB, 4 * MiB, "running")
        _disk(running, "2001", "full", 8 * MiB, 2 * MiB, "running")
        done = Job.create(
            job_id="job-incr",
            vm_id="vm-2",
            request="{}",
            status="completed",
            sync_type="incremental",
        )
        _disk(done, "2000", "incremental", MiB, 0, "completed")
        Job.create(job_id="job-failed", vm_id="vm-3", request="{}", status="failed")
        Job.create(job_id="job-queued", vm_id="vm-4", request="{}", status="queued")


def test_metrics_needs_the_token(client, auth) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    found = scrape(client, auth)
    assert value(found, "vma_jobs", status="running") == 0
    assert value(found, "vma_vcenter_configured") == 0
    assert not [k for k in found if k[0] == "vma_vcenter_reachable"]


def test_metrics_report_the_jobs(client, auth) -> None:
    _seed()
    found = scrape(client, auth)
    assert value(found, "vma_jobs", status="running") == 1
    assert value(found, "vma_jobs", status="completed") == 1
    assert value(found, "vma_jobs", status="failed") == 1
    assert value(found, "vma_jobs", status="queued") == 1
    assert value(found, "vma_jobs", status="stopped") == 0
    assert value(found, "vma_replication_bytes_total", sync_type="full") == 24 * MiB
    assert value(found, "vma_replication_bytes_total", sync_type="incremental") == MiB
    assert value(found, "vma_job_throughput_bytes_per_second", job_id="job-run", vm_id="vm-1") == (
        6 * MiB
    )
    assert not [k for k in found if ("job_id", "job-incr") in k[1]]  # only running jobs

    with database.connection_context():  # migratekit reports more bytes of disk 2000
        accepted, _ = apply_update(
            "job-run",
            {
                "disk_key": "2000",
                "sync_type": "full",
                "phase": "copy",
                "status": "running",
                "bytes_total": 64 * MiB,
                "bytes_done": 48 * MiB,
                "bytes_written": 48 * MiB,
                "bytes_zeroed": 0,
                "throughput_bps": 0,
                "seq": 4,
            },
        )
    assert accepted
    after = scrape(client, auth)
    assert value(after, "vma_replication_bytes_total", sync_type="full") == 56 * MiB


def test_vcenter_reachability(tmp_path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        app = create_app(
            {
                "API_TOKEN": TOKEN,
                "DATA_DIR": str(tmp_path / "data"),
                "VCENTER_HOST": f"127.0.0.1:{port}",
                "VCENTER_USER": "u",
                "VCENTER_PASSWORD": "p",
            },
            start_runner=False,
        )
        client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        found = scrape(client, auth)
        assert value(found, "vma_vcenter_configured") == 1
        assert value(found, "vma_vcenter_reachable", vcenter=f"127.0.0.1:{port}") == 1
    finally:
        listener.close()
    found = scrape(client, auth)  # nothing listens there any more
    assert value(found, "vma_vcenter_reachable", vcenter=f"127.0.0.1:{port}") == 0


def test_openapi_lists_metrics(client, auth) -> None:
    doc = client.get("/api/v1/openapi.json", headers=auth).get_json()
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
