"""The worker's bandwidth pusher against a real VMA API (Flask app served on loopback):
effective limits reach the job's limit file, once per change (edits, windows, shares)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from oma.database import database
from oma.database.models import ReplicationJob
from oma.services.bandwidth_push import BandwidthPusher
from oma.vma_client import VmaClient

from .test_bandwidth_api import _job, _vma

MiB = 1 << 20
TOKEN = "vma-token-0123456789abcdef"


@pytest.fixture
def vma_api(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The real VMA API app (runner not started) on a free loopback port."""
    from vma_api_server import create_app

    app = create_app({"API_TOKEN": TOKEN, "DATA_DIR": str(tmp_path / "vma")}, start_runner=False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        thread.join()


def _vma_jobs(app: Any, job_ids: list[str]) -> None:
    from vma.services.store import Job
    from vma.services.store import database as vma_db

    with vma_db.connection_context():
        for job_id in job_ids:
            Job.create(job_id=job_id, vm_id=f"vm-{job_id}", request="{}", status="running")


def _file_limit(app: Any, job_id: str) -> int | None:
    path = app.extensions["vma"].runner.job_dir(job_id) / "bandwidth.json"
    return json.loads(path.read_text())["limit_bps"]


def test_limits_follow_edits_windows_and_shares(client: Any, auth: Any, vma_api: Any) -> None:
    url, vma_app = vma_api
    vma_id = _vma(client, auth)
    j1, j2 = _job(client, auth, vma_id, 1), _job(client, auth, vma_id, 2)
    with database.connection_context():
        ReplicationJob.update(status="replicating").where(ReplicationJob.id.in_([j1, j2])).execute()
    _vma_jobs(vma_app, [j1, j2])
    office = {
        "rate_bps": None,
        "windows": [{"days": ["mon-fri"], "start": "08:00", "end": "18:00", "rate_bps": 8 * MiB}],
    }
    assert client.put("/api/v1/bandwidth", headers=auth.operator, json=office).status_code == 200
    now = {"t": datetime(2026, 12, 2, 9, 0, tzinfo=UTC)}  # a Wednesday, in the window
    vma_client = VmaClient(url, TOKEN, timeout=5)
    pusher = BandwidthPusher(lambda row: vma_client, clock=lambda: now["t"])
    try:
        with database.connection_context():
            assert pusher.tick() == 2
        assert _file_limit(vma_app, j1) == _file_limit(vma_app, j2) == 4 * MiB  # even shares
        with database.connection_context():
            assert pusher.tick() == 0  # nothing changed: nothing sent

        now["t"] = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)  # the window ends
        with database.connection_context():
            assert pusher.tick() == 2
        assert _file_limit(vma_app, j1) is None

        now["t"] = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)  # the next day's window
        r = client.put(
            f"/api/v1/replications/{j1}/bandwidth", headers=auth.operator, json={"rate_bps": MiB}
        )
        assert r.status_code == 200
        with database.connection_context():
            ReplicationJob.update(status="completed").where(ReplicationJob.id == j2).execute()
            assert pusher.tick() == 1  # j1: min(1 MiB own, all 8 MiB global) — j2 is gone
        assert _file_limit(vma_app, j1) == MiB
        assert set(pusher.sent) == {j1}
    finally:
        vma_client.close()
