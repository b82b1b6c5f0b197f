"""Job directory retention: remove ``<data_dir>/jobs/<job_id>/`` of long-finished jobs.

Only the directory goes (plan, migratekit log, exit status, extents files); the job rows stay
in the database as history. A directory is removed when its job is terminal (completed,
failed, stopped) and finished more than ``retention_days`` ago; 0 keeps everything. Queued
and running jobs, directories without a job row, symlinks and anything outside ``jobs/`` are
never touched.

Nothing records the removal (the schema has no migrations, and a new column would need one):
a job that was started (``started_at`` is set, and starting creates the directory first) and
is terminal but has no directory any more is taken as pruned, see :func:`dir_pruned`.
"""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from migration_common import Status

from .store import Job, parse_time

TERMINAL_STATUSES = tuple(s.value for s in Status if s.is_terminal)


class PruneResult(NamedTuple):
    """What one prune pass did: directories removed, disk space freed, failures."""

    removed: int = 0
    bytes_freed: int = 0
    failed: int = 0
    error: str | None = None  # the first failure, e.g. "PermissionError: [Errno 13] …"


def prune_job_dirs(jobs_root: Path, retention_days: int, now: datetime) -> PruneResult:
    """Remove the directories of terminal jobs that finished before ``now - retention_days``.

    A directory that cannot be removed (permission denied, …) is counted in ``failed`` and
    the pass goes on; it is tried again by the next pass.
    """
    if retention_days <= 0:
        return PruneResult()
    cutoff = _aware(now) - timedelta(days=retention_days)
    rows = list(
        Job.select(Job.job_id, Job.finished_at)
        .where(Job.status.in_(TERMINAL_STATUSES) & Job.finished_at.is_null(False))
        .tuples()
    )
    removed = freed = failed = 0
    error: str | None = None
    for job_id, finished_at in rows:
        path = _own_dir(jobs_root, job_id)
        if path is None or not _finished_before(finished_at, cutoff):
            continue
        size = _disk_usage(path)
        try:
            shutil.rmtree(path)
        except OSError as exc:
            failed += 1
            error = error or f"{job_id}: {type(exc).__name__}: {exc}"
            freed += size - _disk_usage(path)
            continue
        removed += 1
        freed += size
    return PruneResult(removed, freed, failed, error)


def dir_pruned(job: Job, path: Path) -> bool:
    """True when ``job`` was started and is finished, but its directory ``path`` is gone."""
    return (
        Status(job.status).is_terminal and job.started_at is not None and not os.path.lexists(path)
    )


def _own_dir(jobs_root: Path, job_id: str) -> Path | None:
    """``jobs_root/job_id`` when that is a real directory directly under ``jobs_root``."""
    if job_id in ("", ".", "..") or "/" in job_id or "\0" in job_id:
        return None
    path = jobs_root / job_id
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None  # already pruned, or never created
    return path if stat.S_ISDIR(mode) else None  # a symlink is not followed, not removed


def _finished_before(finished_at: str, cutoff: datetime) -> bool:
    try:
        finished = parse_time(finished_at)
    except ValueError:
        return False  # unreadable time: keep the directory
    return finished is not None and _aware(finished) < cutoff


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _disk_usage(path: Path) -> int:
    """Bytes allocated to the files under ``path`` (symlinks not followed; 0 when gone)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total
