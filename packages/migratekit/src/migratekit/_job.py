"""Run a multi-disk job: disks concurrently up to a limit, one result per disk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ._log import get_logger
from ._plan import Plan
from .copy import CopyOptions, DiskResult, copy_disk
from .progress._tracker import ProgressHub

log = get_logger(__name__)


def run_plan(plan: Plan, options: CopyOptions, hub: ProgressHub) -> list[DiskResult]:
    """Copy every disk of ``plan``; a failing disk does not stop the others.

    Results come back in plan order. The hub is not closed here (the caller does, after the
    final updates were offered).
    """
    trackers = [hub.tracker(d.disk_key, d.mode, d.change_id) for d in plan.disks]
    log.info(
        "job started",
        job_id=plan.job_id,
        disks=len(plan.disks),
        max_parallel_disks=plan.max_parallel_disks,
    )
    with ThreadPoolExecutor(max_workers=plan.max_parallel_disks, thread_name_prefix="disk") as pool:
        futures = [
            pool.submit(copy_disk, d, options, t) for d, t in zip(plan.disks, trackers, strict=True)
        ]
        return [f.result() for f in futures]
