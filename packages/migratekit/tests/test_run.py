"""``migratekit run``: multi-disk plans, per-disk results, progress posted over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from migration_common import Status, parse_disk_update

from .conftest import MiB, Recorder, make_sparse_random, run_mk, sha256_file

pytestmark = pytest.mark.slow
TOKEN = "s3cr3t-progress-token"


@pytest.fixture
def vma() -> Iterator[Recorder]:
    rec = Recorder()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def write_plan(path: Path, disks: list[dict], **kw: object) -> Path:
    path.write_text(
        json.dumps(
            {"job_id": "job-1", "max_parallel_disks": 2, "verify": False, "disks": disks, **kw}
        )
    )
    return path


def test_progress_is_posted_with_token_and_final_change_id(
    tmp_path: Path, vma: Recorder, raw_export
) -> None:
    src = make_sparse_random(tmp_path / "src.raw", 24 * MiB, seed=5)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(24 * MiB))
    s, t = raw_export(src, readonly=True), raw_export(dst)
    plan = write_plan(
        tmp_path / "plan.json",
        [
            {
                "disk_key": "2000",
                "source": s.uri,
                "target": t.uri,
                "mode": "full",
                "target_is_zero": False,
                "changed_extents": None,
                "changed_extents_file": None,
                "dirty_bitmap": None,
                "change_id": "gen-3",
            }
        ],
        verify=True,
    )
    res = run_mk(
        "run",
        "--plan",
        str(plan),
        "--progress-url",
        vma.url,
        "--progress",
        "plain",
        env={"MIGRATEKIT_PROGRESS_TOKEN": TOKEN},
    )
    assert res.returncode == 0, res.stderr
    assert sha256_file(dst) == sha256_file(src)
    assert vma.posts, "no progress posted"
    assert {p for p, _, _ in vma.posts} == {"/api/v1/progress/job-1/update"}
    assert {a for _, a, _ in vma.posts} == {f"Bearer {TOKEN}"}
    ups = vma.updates("2000")
    seqs = [u.seq for u in ups]
    assert seqs == sorted(set(seqs))
    last = ups[-1]
    assert last.status is Status.COMPLETED and last.phase.value == "done"
    assert last.change_id == "gen-3" and last.bytes_done == last.bytes_total > 0
    assert any(u.phase.value == "verify" for u in ups)
    assert all(u.change_id is None for u in ups[:-1])
    assert TOKEN not in res.stderr and TOKEN not in res.stdout
    assert "disk 2000: completed (full)" in res.stdout


def test_one_failing_disk_fails_the_job_with_per_disk_results(
    tmp_path: Path, vma: Recorder, raw_export
) -> None:
    src = make_sparse_random(tmp_path / "src.raw", 8 * MiB, seed=9)
    good = tmp_path / "good.raw"
    good.write_bytes(bytes(8 * MiB))
    small = tmp_path / "small.raw"
    small.write_bytes(bytes(4 * MiB))
    s = raw_export(src, readonly=True)
    plan = write_plan(
        tmp_path / "plan.json",
        [
            {"disk_key": "2000", "source": s.uri, "target": raw_export(good).uri, "change_id": "a"},
            {
                "disk_key": "2001",
                "source": s.uri,
                "target": raw_export(small).uri,
                "change_id": "b",
            },
            {"disk_key": "2002", "source": s.uri, "target": s.uri.replace("/disk", "/missing")},
        ],
    )
    report = tmp_path / "report.json"
    res = run_mk(
        "run",
        "--plan",
        str(plan),
        "--job-id",
        "job-9",
        "--report",
        str(report),
        "--progress-url",
        vma.url,
        "--progress",
        "off",
    )
    assert res.returncode == 1
    doc = json.loads(report.read_text())
    assert doc["job_id"] == "job-9" and doc["status"] == "failed" and doc["exit_code"] == 1
    by_key = {d["disk_key"]: d for d in doc["disks"]}
    assert by_key["2000"]["status"] == "completed" and by_key["2000"]["change_id"] == "a"
    assert sha256_file(good) == sha256_file(src)
    assert by_key["2001"]["status"] == "failed"
    assert "smaller than the source" in by_key["2001"]["error"]
    assert "disk 2002" in by_key["2002"]["error"] and "missing" in by_key["2002"]["error"]
    assert "disk 2001: failed" in res.stdout and "2 of 3 disks failed" in res.stderr
    finals = {
        u.disk_key: u
        for u in map(parse_disk_update, (b for _, _, b in vma.posts))
        if u.status.is_terminal
    }
    assert finals["2000"].status is Status.COMPLETED
    assert finals["2001"].status is Status.FAILED and "smaller" in (finals["2001"].error or "")
    assert finals["2002"].status is Status.FAILED
    assert {p for p, _, _ in vma.posts} == {"/api/v1/progress/job-9/update"}


def test_a_failing_vma_never_fails_the_copy(tmp_path: Path, raw_export) -> None:
    rec = Recorder(status=503)
    rec.thread.start()
    try:
        src = make_sparse_random(tmp_path / "src.raw", 4 * MiB, seed=2)
        dst = tmp_path / "dst.raw"
        dst.write_bytes(bytes(4 * MiB))
        plan = write_plan(
            tmp_path / "plan.json",
            [
                {
                    "disk_key": "7",
                    "source": raw_export(src, readonly=True).uri,
                    "target": raw_export(dst).uri,
                    "change_id": "c",
                }
            ],
        )
        res = run_mk("run", "--plan", str(plan), "--progress-url", rec.url, "--progress", "off")
    finally:
        rec.server.shutdown()
        rec.server.server_close()
    assert res.returncode == 0, res.stderr
    assert sha256_file(dst) == sha256_file(src)
    finals = [u for u in rec.updates("7") if u.status is Status.COMPLETED]
    assert len(finals) >= 2, "the final update must be retried"
    assert "progress update not delivered" in res.stderr


def test_unreachable_vma_never_fails_the_copy(tmp_path: Path, raw_export) -> None:
    from labtest.procs import free_port

    src = make_sparse_random(tmp_path / "src.raw", 4 * MiB, seed=4)
    dst = tmp_path / "dst.raw"
    dst.write_bytes(bytes(4 * MiB))
    plan = write_plan(
        tmp_path / "plan.json",
        [
            {
                "disk_key": "7",
                "source": raw_export(src, readonly=True).uri,
                "target": raw_export(dst).uri,
            }
        ],
    )
    res = run_mk(
        "run",
        "--plan",
        str(plan),
        "--progress-url",
        f"http://127.0.0.1:{free_port()}",
        "--progress",
        "off",
    )
    assert res.returncode == 0, res.stderr
    assert sha256_file(dst) == sha256_file(src)


def test_bad_plan_is_a_usage_error(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "plan.json", [{"disk_key": "1", "source": "nbd:/x", "target": "nbd://h/x"}]
    )
    res = run_mk("run", "--plan", str(plan))
    assert res.returncode == 2
    assert res.stderr.splitlines()[0].startswith("error: disks[0].source: malformed NBD URI")
