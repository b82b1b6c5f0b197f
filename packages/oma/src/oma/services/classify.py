"""What one poll answer means for one job: a pure decision, no database, no HTTP.

The poller asks the owning VMA about every active job; for each job the answer is one of
"here is its progress", "I do not know this job" (``not_found``) or no answer at all (the VMA
is unreachable). :func:`decide` turns that answer plus what the database knows about the job
into a :class:`Decision` the poller then writes in one transaction. Keeping it pure keeps the
rules testable and readable in one place:

- progress ``completed`` → complete, but only when every disk the job replicates reports
  ``completed`` with a ``change_id`` (the target was flushed) and, for a job that asked for
  verification, ``verified``; otherwise fail as ``vma_error``;
- a disk reporting ``verified: false`` (its replica does not read back what the source holds)
  → fail as ``verify_mismatch``, the message naming the disk and both digests;
- progress ``failed`` → fail with the VMA's error (class ``vma_reported``);
- progress ``stopped`` → stopped;
- running → update; more bytes done or a phase change counts as progress; no progress for
  longer than ``stale_timeout`` → fail as ``stalled``; queued (waiting for a VMA slot) never
  stalls;
- ``not_found`` for longer than ``job_lost_timeout`` since the VMA last reported the job (or
  since replication started) → fail as ``job_lost``;
- unreachable for longer than ``vma_unreachable_timeout`` since the VMA last reported the job
  → fail as ``vma_unreachable``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from migration_common import JobProgress, Phase, Status


class ErrorClass(StrEnum):
    """Why a job failed, as stored in ``replication_jobs.error_class``."""

    VMA_REPORTED = "vma_reported"
    VMA_ERROR = "vma_error"
    VMA_UNREACHABLE = "vma_unreachable"
    JOB_LOST = "job_lost"
    STALLED = "stalled"
    VERIFY_MISMATCH = "verify_mismatch"
    CLOUDSTACK = "cloudstack"
    DEVICE = "device_not_found"
    EXPORT = "nbd_export"
    INTERNAL = "internal"


class Action(StrEnum):
    """What the poller does with the job."""

    NOTHING = "nothing"  # nothing to write (waiting inside a grace period)
    UPDATE = "update"  # write progress, job stays active
    COMPLETE = "complete"
    FAIL = "fail"
    STOP = "stop"


@dataclass(frozen=True)
class Timeouts:
    """The poller's configured timeouts, in seconds."""

    vma_unreachable: float = 120.0
    job_lost: float = 60.0
    stale: float = 900.0


@dataclass(frozen=True)
class JobView:
    """What the database knows about one active job (the poller's input)."""

    job_id: str
    disk_keys: frozenset[str]
    status: str
    phase: str | None
    bytes_done: int
    started_at: datetime | None
    last_progress_at: datetime | None
    vma_seen_at: datetime | None
    #: when this poller process started: a worker that was down does not blame the VMA for
    #: its own absence — after a restart every timeout runs in full once more
    watch_since: datetime | None = None
    #: the job asked the VMA to verify every disk
    verify: bool = False


@dataclass
class Decision:
    """The poller's verdict for one job."""

    action: Action
    progress: JobProgress | None = None
    error_class: ErrorClass | None = None
    message: str | None = None
    advanced: bool = False  # byte/phase/status progress since the last tick
    seen: bool = False  # the VMA reported the job this tick
    events: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)


def _since(now: datetime, ref: datetime | None) -> float:
    return (now - ref).total_seconds() if ref is not None else 0.0


def _reference(job: JobView) -> datetime | None:
    """When the VMA last vouched for the job (or replication started, or this poller did)."""
    stamps = [t for t in (job.vma_seen_at, job.started_at, job.watch_since) if t is not None]
    return max(stamps) if stamps else None


def decide_unreachable(job: JobView, now: datetime, timeouts: Timeouts, reason: str) -> Decision:
    """The VMA did not answer: fail after ``vma_unreachable`` seconds, else wait."""
    waited = _since(now, _reference(job))
    if waited > timeouts.vma_unreachable:
        return Decision(
            Action.FAIL,
            error_class=ErrorClass.VMA_UNREACHABLE,
            message=f"VMA unreachable for {waited:.0f}s: {reason}",
        )
    return Decision(Action.NOTHING)


def decide_not_found(job: JobView, now: datetime, timeouts: Timeouts) -> Decision:
    """The VMA does not know the job: fail after ``job_lost`` seconds, else wait."""
    waited = _since(now, _reference(job))
    if waited > timeouts.job_lost:
        return Decision(
            Action.FAIL,
            error_class=ErrorClass.JOB_LOST,
            message=f"the VMA has not known this job for {waited:.0f}s",
        )
    return Decision(Action.NOTHING)


def decide_progress(
    job: JobView, progress: JobProgress, now: datetime, timeouts: Timeouts
) -> Decision:
    """The VMA reported the job's progress."""
    status = progress.status
    advanced = progress.bytes_done > job.bytes_done or progress.phase.value != (job.phase or "")
    events: list[tuple[str, str]] = []
    if job.phase != progress.phase.value:
        events.append(("phase", f"phase {progress.phase.value}"))
    base = {"progress": progress, "advanced": advanced, "seen": True}
    mismatched = [d for d in progress.disks if d.verified is False]
    if mismatched and status in (Status.COMPLETED, Status.FAILED):
        return Decision(
            Action.FAIL,
            error_class=ErrorClass.VERIFY_MISMATCH,
            message="; ".join(
                f"verification failed on disk {d.disk_key}: the replica reads back sha256 "
                f"{d.target_sha256}, the source holds sha256 {d.source_sha256}"
                for d in mismatched
            ),
            events=events,
            **base,
        )
    if status is Status.COMPLETED:
        by_key = {d.disk_key: d for d in progress.disks}
        missing = sorted(k for k in job.disk_keys if k not in by_key)
        if missing:
            return Decision(
                Action.FAIL,
                error_class=ErrorClass.VMA_ERROR,
                message=f"VMA reported completion without disk(s) {', '.join(missing)}",
                **base,
            )
        for key in sorted(job.disk_keys):
            disk = by_key[key]
            if disk.status is not Status.COMPLETED or not disk.change_id:
                return Decision(
                    Action.FAIL,
                    error_class=ErrorClass.VMA_ERROR,
                    message=f"VMA reported completion but disk {key} is "
                    f"{disk.status.value} without a change_id",
                    **base,
                )
            if job.verify and disk.verified is not True:
                return Decision(
                    Action.FAIL,
                    error_class=ErrorClass.VMA_ERROR,
                    message=f"VMA reported completion but disk {key} was not verified "
                    "(the job asked for verification)",
                    **base,
                )
        return Decision(Action.COMPLETE, events=events, **base)
    if status is Status.FAILED:
        errors = [f"disk {d.disk_key}: {d.error}" for d in progress.disks if d.error]
        message = progress.error or "; ".join(errors) or "the VMA reported the job failed"
        return Decision(
            Action.FAIL, error_class=ErrorClass.VMA_REPORTED, message=message, events=events, **base
        )
    if status is Status.STOPPED:
        return Decision(Action.STOP, message="stopped on the VMA", events=events, **base)
    if status is Status.QUEUED:
        # waiting for a slot under the VMA's concurrency limit is not a stall: the stale
        # clock starts when the job runs
        base["advanced"] = True
        return Decision(Action.UPDATE, events=events, **base)
    if not advanced and progress.phase is not Phase.VERIFY:
        # verify reads both sides and moves no bytes: bytes_done stands still by design, and a
        # hung verify is caught by migratekit's NBD timeouts and the VMA's process supervision
        idle = _since(now, job.last_progress_at or job.started_at)
        if idle > timeouts.stale:
            return Decision(
                Action.FAIL,
                error_class=ErrorClass.STALLED,
                message=f"no progress for {idle:.0f}s (bytes_done stuck at {progress.bytes_done})",
                **base,
            )
    return Decision(Action.UPDATE, events=events, **base)
