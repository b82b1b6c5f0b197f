"""A full copy killed mid-way is resumed by the operator's retry, through the real OMA (serve +
worker), VMA, migratekit, qemu-nbd, vcsim and the CloudStack simulator: the OMA asks the VMA to
continue the failed job (same replica volumes and exports, snapshot kept), the retry moves only
what the checkpoints did not cover, the replicas end byte-identical, and the API and ``oma job``
say it resumed and from where."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labtest.procs import wait_until

from .conftest import E2eLab, make_lab

pytestmark = pytest.mark.slow


@pytest.fixture
def resume_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[E2eLab]:
    """The throttled lab, with migratekit checkpointing every 100 ms (the VMA passes the
    environment on to it) and a shallow pipeline: a flush is answered after the writes sent
    before it, which the slow link delays by (requests in flight) / (link rate)."""
    monkeypatch.setenv("MIGRATEKIT_CHECKPOINT_INTERVAL", "0.1")
    monkeypatch.setenv("MIGRATEKIT_WINDOW", "2")
    monkeypatch.setenv("MIGRATEKIT_REQUEST_SIZE", "256K")
    with make_lab(tmp_path, slow_link=True) as lab:
        yield lab


def _half_done(lab: E2eLab, job_id: str) -> bool:
    """migratekit runs for the job and has copied at least half of it, not all."""
    job = lab.vma_job(job_id)
    p = (job or {}).get("progress") or {}
    done, total = p.get("bytes_done", 0), p.get("bytes_total", 0)
    return bool(job and job.get("pid")) and 0 < total <= 2 * done and done < total


def test_retry_of_a_killed_full_copy_resumes_from_its_checkpoints(resume_lab) -> None:
    lab = resume_lab
    lab.register()
    first = lab.replicate("full")
    wait_until(lambda: _half_done(lab, first), 120, interval=0.05, what="the copy at 50 %")
    os.kill(lab.vma_job(first)["pid"], signal.SIGKILL)
    failed = lab.wait_job(first)
    assert failed["status"] == "failed" and "signal 9" in failed["error_message"], failed
    assert failed["resume"] is None  # it did not ask
    # the VMA keeps the failed full copy's snapshot for the retry
    assert [s["name"] for s in lab.source_snapshots()] == [f"ossea-migrate-{first}"]

    lab.link.rate = None
    retry = lab.wait_job(lab.replicate("auto"))  # the operator retries
    assert retry["status"] == "completed", retry
    assert retry["sync_type"] == "full"
    resume = retry["resume"]
    assert resume["from_job"] == first and resume["resumed"] is True, resume
    offsets = resume["disks"]
    sizes = {str(d["key"]): int(d["capacity_bytes"]) for d in lab.vm["disks"]}
    assert set(offsets) == set(sizes) and sum(offsets.values()) > 0
    # the retry wrote each disk from its checkpoint on (the reused replicas are not known to
    # be zero, so their holes are written as zeroes): exactly what was left
    assert retry["bytes_total"] == sum(sizes[k] - offsets[k] for k in sizes)
    assert retry["bytes_done"] < sum(sizes.values())
    lab.assert_replicas_equal()
    assert lab.source_snapshots() == []  # the resumed job removed the snapshot when done

    env = {**os.environ, **lab.oma.client_env}
    shown = subprocess.run(
        [sys.executable, "-m", "oma", "job", retry["id"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for key, offset in offsets.items():
        assert f"disk {key} from byte {offset}" in shown, shown
    assert f"resume: continued job {first}'s copy" in shown
