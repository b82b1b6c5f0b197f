"""The real `vma-api-server` (gunicorn) without a vCenter: startup, auth, large batches."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

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
        "error: VMA_API_TOKEN: is required (bearer token every API call must carry "
        "(at least 16 characters))"
    )
