"""Resuming an interrupted full copy: a retry job takes over a failed job's snapshot and
checkpoints.

migratekit writes one checkpoint per disk of a full copy into ``jobs/<id>/checkpoints/``
(how far the copy has safely reached, after a target flush). When such a job fails or is
stopped with a checkpoint past zero, the runner keeps its snapshot. A new job that names it in
``resume_from_job`` — same VM, same disks and target URIs, only full copies — is checked when
it is submitted (:func:`offer`, the answer of ``POST /replicate`` and ``GET /jobs/{id}``'s
``resume``) and again when it starts (:func:`take_over`): the snapshot must still exist. The
new job then owns that snapshot (the old row lets go of it), gets a copy of the checkpoints,
reports the old job's change IDs (the data was read from that snapshot) and runs migratekit
with ``"resume": true``; migratekit itself ignores a checkpoint whose source (VM, snapshot,
disk), target URI or sizes differ. Anything that does not fit means a full copy from zero,
with the reason in ``resume.reason``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from migration_common import Status, get_logger

from ..errors import SnapshotNotFoundError, VmaError
from ..sources.base import PreparedDisk, SourceState
from .store import Job, JobDisk, parse_time
from .vcenter import VcenterProvider

log = get_logger(__name__)

#: The checkpoint directory inside a job directory (the plan's ``checkpoint_dir``).
CHECKPOINTS = "checkpoints"
#: The resume decision of a job, in its job directory.
OFFER_FILE = "resume.json"


def source_identity(job: Job, disk_key: str) -> str:
    """What a checkpoint's ``source`` must be: the VM, the snapshot and the disk."""
    return f"{job.vm_id}/{job.snapshot_id}/{disk_key}"


def checkpoint_offsets(job_dir: Path) -> dict[str, int]:
    """``{disk_key: safe_offset}`` of the checkpoints migratekit left in ``job_dir``."""
    out: dict[str, int] = {}
    for path in sorted((job_dir / CHECKPOINTS).glob("disk-*.json")):
        try:
            doc = json.loads(path.read_text())
            out[str(doc["disk_key"])] = int(doc["safe_offset"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def resumable(job: Job, job_dir: Path) -> bool:
    """True when ``job`` was a full copy that safely reached past zero on some disk."""
    return job.sync_type == "full" and any(v > 0 for v in checkpoint_offsets(job_dir).values())


def _check(
    job_id: str, vm_id: str, request: dict[str, Any], vc: Any, jobs_dir: Path
) -> tuple[Job | None, dict[str, int], str | None]:
    """(previous job, its checkpoint offsets, None) when the job may resume, else a reason."""
    wanted = request.get("resume_from_job")
    previous = Job.get_or_none(Job.job_id == wanted)
    if previous is None:
        return None, {}, f"no job {wanted!r}"
    if previous.job_id == job_id:
        return None, {}, "a job cannot resume itself"
    if previous.vm_id != vm_id:
        return None, {}, f"job {wanted} replicated another VM ({previous.vm_id})"
    if previous.status not in (Status.FAILED.value, Status.STOPPED.value):
        return None, {}, f"job {wanted} is {previous.status}, not failed or stopped"
    if previous.sync_type != "full":
        return None, {}, f"job {wanted} was an incremental sync"
    if any(d.get("previous_change_id") for d in request["disks"]):
        return None, {}, "an incremental request does not resume a full copy"
    targets = {d["disk_key"]: d["target_uri"] for d in request["disks"]}
    before = {d.disk_key: d.target_uri for d in JobDisk.select().where(JobDisk.job == previous)}
    if targets != before:
        return None, {}, f"the disks or target URIs differ from job {wanted}'s"
    offsets = checkpoint_offsets(jobs_dir / previous.job_id)
    if not any(v > 0 for v in offsets.values()):
        return None, {}, f"job {wanted} left no checkpoint"
    if not previous.snapshot_id:
        return None, {}, f"the snapshot of job {wanted} was removed"
    try:
        kept = any(s["id"] == previous.snapshot_id for s in vc.list_snapshots(vm_id))
    except VmaError as exc:
        return None, {}, f"cannot list the VM's snapshots: {exc}"
    if not kept:
        return None, {}, f"snapshot {previous.snapshot_id} of job {wanted} no longer exists"
    return previous, offsets, None


def _save(job_dir: Path, doc: dict[str, Any]) -> dict[str, Any]:
    job_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = job_dir / (OFFER_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True))
    tmp.replace(job_dir / OFFER_FILE)
    return doc


def load(job_dir: Path) -> dict[str, Any] | None:
    """The job's resume decision (None when it did not ask to resume)."""
    try:
        return json.loads((job_dir / OFFER_FILE).read_text())
    except (OSError, ValueError):
        return None


def offer(
    job_id: str, vm_id: str, request: dict[str, Any], vc: Any, jobs_dir: Path
) -> dict[str, Any] | None:
    """Decide at submit (before the job row exists) whether a job resumes; stored and returned.

    ``{"from_job", "resumed": bool, "reason", "disks": {key: safe offset}}`` — the document
    the API shows; None when the request did not ask.
    """
    wanted = request.get("resume_from_job")
    if not wanted:
        return None
    previous, offsets, reason = _check(job_id, vm_id, request, vc, jobs_dir)
    if reason:
        log.warning("resume refused: full copy from zero", job_id=job_id, reason=reason)
    doc = {"from_job": wanted, "resumed": previous is not None, "reason": reason, "disks": offsets}
    return _save(jobs_dir / job_id, doc)


def take_over(job: Job, vc: Any, work: Path) -> Job | None:
    """When ``job`` resumes: take the previous job's snapshot and checkpoints, return that job.

    Checked again (the snapshot may have gone since the submit); None means a full copy from
    zero (the reason is logged and stored in the job's resume document).
    """
    wanted = job.request_data().get("resume_from_job")
    if not wanted:
        return None
    previous, offsets, reason = _check(job.job_id, job.vm_id, job.request_data(), vc, work.parent)
    if previous is None:
        log.warning("resume refused: full copy from zero", job_id=job.job_id, reason=reason)
        _save(
            work, {"from_job": wanted, "resumed": False, "reason": reason, "disks": offsets or {}}
        )
        return None
    target = work / CHECKPOINTS
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (work.parent / previous.job_id / CHECKPOINTS).glob("disk-*.json"):
        shutil.copy2(path, target / path.name)
    job.snapshot_id = previous.snapshot_id
    job.save()
    previous.snapshot_id = None  # the snapshot belongs to the new job now
    previous.save()
    _save(work, {"from_job": wanted, "resumed": True, "reason": None, "disks": offsets})
    log.info(
        "resuming the full copy of a previous job",
        job_id=job.job_id,
        from_job=wanted,
        snapshot=job.snapshot_id,
        offsets=offsets,
    )
    return previous


def keep_change_ids(previous: Job, prepared: list[PreparedDisk], state: SourceState) -> None:
    """Report the previous job's change IDs: its copy read the same snapshot.

    (A lab source records writes in bitmap generations; the previous job's generation started
    before its copy did, so it is the one that covers every write since that data was read.)
    """
    before = {d.disk_key: d.change_id for d in JobDisk.select().where(JobDisk.job == previous)}
    for p in prepared:
        change_id = before.get(p.disk_key)
        if change_id:
            p.change_id = change_id
            if p.disk_key in state.bitmaps:
                state.bitmaps[p.disk_key] = change_id


def release_expired(jobs_dir: Path, vcenter: VcenterProvider, now: datetime, days: int) -> int:
    """Remove the snapshots kept for a resume of jobs finished over ``days`` days ago.

    Runs before the job directory retention removes those jobs' checkpoints (after which they
    could not be resumed anyway). A snapshot already gone counts as released. Returns how many
    were released; a vCenter error is logged and retried at the next pass.
    """
    cutoff = now - timedelta(days=days)
    released = 0
    candidates = Job.select().where(
        Job.status.in_((Status.FAILED.value, Status.STOPPED.value)), Job.snapshot_id.is_null(False)
    )
    for job in candidates:
        finished = parse_time(job.finished_at)
        if finished is None or finished > cutoff or not resumable(job, jobs_dir / job.job_id):
            continue
        try:
            with vcenter.client() as vc:
                vc.remove_snapshot(job.vm_id, job.snapshot_id)
        except SnapshotNotFoundError:
            pass
        except VmaError as exc:
            log.warning(
                "snapshot kept for a resume not removed; retried at the next prune",
                job_id=job.job_id,
                snapshot=job.snapshot_id,
                error=str(exc),
            )
            continue
        log.info(
            "snapshot kept for a resume removed: job past its retention",
            job_id=job.job_id,
            snapshot=job.snapshot_id,
        )
        job.snapshot_id = None
        job.save()
        released += 1
    return released
