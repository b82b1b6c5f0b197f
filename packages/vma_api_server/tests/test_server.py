"""The real `vma-api-server` (gunicorn) without a vCenter: startup, auth, large batches."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from labtest.procs import wait_until
from labtest.vma import vma_server

pytestmark = pytest.mark.slow


def test_gunicorn_server_auth_and_large_batch(tmp_path):
    with vma_server(tmp_path) as vma:
        status, body = vma.request("GET", "health", token=None)
        assert status == 200 and body["status"] == "ok"
        status, body = vma.request("GET", "jobs", token=None)
        assert status == 401 and body["error"]["code"] == "unauthorized"
        ids = [str(uuid.uuid4()) for _ in range(200)]
        body = vma.get("progress?job_ids=" + "%2C".join(ids))
        assert body == {"jobs": [], "not_found": ids}
        status, body = vma.request("GET", "progress?job_ids=" + ",".join([*ids, "one-more"]))
        assert status == 400 and body["error"]["field"] == "job_ids"
        assert (tmp_path / "vma-data" / "vma.db").exists()


def test_server_refuses_to_start_without_token(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "VMA_DATA_DIR": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from vma_api_server.cli import main; sys.exit(main())"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 2
    assert res.stderr.splitlines()[0] == (
        "error: VMA_API_TOKEN: is required until the VMA is enrolled (vma-api-server enroll)"
    )


def test_server_prunes_old_job_dirs_after_start(tmp_path):
    """VMA_JOB_RETENTION_DAYS reaches the runner, which prunes once shortly after start."""
    from datetime import timedelta

    from migration_common import rfc3339, utcnow
    from vma.services.store import Job, database, init_db

    data = tmp_path / "vma-data"  # the data directory vma_server uses
    data.mkdir()
    init_db(data / "vma.db")
    with database.connection_context():
        for job_id, days in (("j-old", 10), ("j-new", 3)):
            when = rfc3339(utcnow() - timedelta(days=days))
            Job.create(
                job_id=job_id,
                vm_id=f"vm-{job_id}",
                request="{}",
                status="completed",
                started_at=when,
                finished_at=when,
            )
            (data / "jobs" / job_id).mkdir(parents=True)
            (data / "jobs" / job_id / "migratekit.log").write_text("copied\n")
    database.close()
    with vma_server(tmp_path, env={"VMA_JOB_RETENTION_DAYS": "7"}) as vma:
        wait_until(lambda: vma.request("GET", "jobs/j-old/log")[0] == 410, 10, what="j-old pruned")
        body = vma.request("GET", "jobs/j-old/log")[1]
        assert body["error"]["code"] == "log_pruned"
        assert "VMA_JOB_RETENTION_DAYS=7" in body["error"]["message"]
        assert not (data / "jobs" / "j-old").exists()
        assert vma.get("jobs/j-new/log")["log"] == "copied\n"
        assert vma.get("jobs/j-old")["status"] == "completed"
        assert vma.request("GET", "jobs/j-none/log")[0] == 404
        assert "job directories pruned" in vma.process.log_text()
