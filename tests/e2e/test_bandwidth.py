"""Bandwidth control end to end through the real OMA (serve + worker), VMA, migratekit,
qemu-nbd, vcsim and the CloudStack simulator: a global limit set through the OMA's API reaches
the running copy (the VMA's progress reports it as ``limit_bps``), an edit while the job runs
is in force within a couple of seconds, the job's effective limit is shown, and the replicas
equal their sources."""

from __future__ import annotations

import time
from typing import Any

import pytest

from labtest.procs import wait_until

pytestmark = pytest.mark.slow
MiB = 1 << 20


def _limits(lab: Any, job_id: str) -> set[int | None]:
    """The limits the VMA's running disks of the job report (empty before any report)."""
    job = lab.vma_job(job_id) or {}
    disks = (job.get("progress") or {}).get("disks") or []
    return {d.get("limit_bps") for d in disks if d.get("status") == "running"}


def test_a_global_limit_and_its_change_reach_the_copy(lab) -> None:
    lab.register()
    slow, fast = 2 * MiB, 16 * MiB
    lab.ok("PUT", "bandwidth", {"rate_bps": slow})
    job_id = lab.replicate("full")
    wait_until(lambda: _limits(lab, job_id) == {slow}, timeout=60, interval=0.05, what="limit")
    shown = lab.ok("GET", f"replications/{job_id}/bandwidth")
    assert shown["effective"]["effective_bps"] == slow, shown
    assert shown["effective"]["global_share_bps"] == slow

    lab.wait_copying(job_id)  # bytes move, at the slow rate
    changed = time.monotonic()
    lab.ok("PUT", "bandwidth", {"rate_bps": fast})
    wait_until(lambda: _limits(lab, job_id) == {fast}, timeout=30, interval=0.05, what="change")
    delay = time.monotonic() - changed
    # worker tick (0.2 s in the lab) + one progress interval (1 s) + the report itself
    assert delay < 3.0, f"the new limit was reported {delay:.2f}s after the edit"

    done = lab.wait_job(job_id)
    assert done["status"] == "completed", done
    lab.assert_replicas_equal()
    assert lab.ok("GET", f"replications/{job_id}/bandwidth")["effective"] is None  # not running
    print(f"\nnew limit reported by the VMA {delay:.2f}s after the API edit")
