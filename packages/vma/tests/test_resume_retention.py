"""A snapshot kept for a resume is removed with its job's checkpoints by the retention pass."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from migration_common import rfc3339, utcnow
from vma.errors import SnapshotNotFoundError
from vma.services.runner import JobRunner, RunnerConfig
from vma.services.store import Job, database, init_db
from vma.services.vcenter import VcenterProvider


class _Vcenter:
    """Stand-in for VSphereClient that records snapshot removals (unit test of the prune)."""

    def __init__(self, gone: set[str]) -> None:
        self.removed: list[str] = []
        self.gone = gone

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def remove_snapshot(self, vm_id: str, snapshot_id: str) -> None:
        if snapshot_id in self.gone:
            raise SnapshotNotFoundError(f"no snapshot {snapshot_id}")
        self.removed.append(snapshot_id)


@pytest.fixture
def setup(tmp_path):
    vc = _Vcenter(gone={"snapshot-gone"})

    class Provider(VcenterProvider):
        def client(self, creds=None):
            return vc

    init_db(tmp_path / "vma.db")
    config = RunnerConfig(data_dir=tmp_path, progress_url="http://127.0.0.1:9", env=os.environ)
    with database.connection_context():
        yield JobRunner(config, Provider(tmp_path)), vc


def _job(runner, job_id, *, days_ago, safe_offset, snapshot, sync_type="full"):
    Job.create(
        job_id=job_id,
        vm_id="vm-1",
        request="{}",
        status="failed",
        sync_type=sync_type,
        snapshot_id=snapshot,
        finished_at=rfc3339(utcnow() - timedelta(days=days_ago)),
    )
    checkpoints = runner.job_dir(job_id) / "checkpoints"
    checkpoints.mkdir(parents=True)
    doc = {"disk_key": "2000", "safe_offset": safe_offset}
    (checkpoints / "disk-2000.json").write_text(json.dumps(doc))


def test_prune_releases_kept_snapshots_past_the_retention_only(setup):
    runner, vc = setup
    _job(runner, "old", days_ago=20, safe_offset=1 << 20, snapshot="snapshot-1")
    _job(runner, "recent", days_ago=1, safe_offset=1 << 20, snapshot="snapshot-2")
    _job(runner, "no-progress", days_ago=20, safe_offset=0, snapshot="snapshot-3")
    _job(
        runner,
        "incremental",
        days_ago=20,
        safe_offset=1,
        snapshot="snapshot-4",
        sync_type="incremental",
    )
    _job(runner, "swept", days_ago=20, safe_offset=1 << 20, snapshot="snapshot-gone")

    runner.prune()

    # only a resumable full copy past the retention held a kept snapshot; a gone one is released
    assert vc.removed == ["snapshot-1"]
    assert Job.get_by_id("old").snapshot_id is None
    assert Job.get_by_id("swept").snapshot_id is None
    assert Job.get_by_id("recent").snapshot_id == "snapshot-2"
    assert not runner.job_dir("old").exists() and runner.job_dir("recent").exists()
    runner.prune()
    assert vc.removed == ["snapshot-1"]  # nothing twice
