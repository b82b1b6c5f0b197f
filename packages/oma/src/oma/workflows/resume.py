"""Resuming a failed full copy: when the OMA asks the VMA for it, and what it shows.

A full sync asks the VMA to continue the previous job's copy (``resume_from_job``) when that
job is the VM's latest, was a full sync the VMA had accepted, failed (not because its replica
failed verification) or was stopped, ran on the same VMA, and wrote to the same replica volumes
through the same exports (the current run created no volume and every disk's target URI is
unchanged). The VMA decides the rest (its
snapshot must still exist, the checkpoints must match) and answers; the answer is recorded as
a ``resume`` event, which ``GET /replications/{id}`` shows as ``resume`` and ``oma job``
prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..database.models import JobDisk, JobEvent, JobStatus, ReplicationJob
from ..database.repos._select import Where, first
from ..services import _queries as q

EVENT = "resume"


def previous_full_job(job: ReplicationJob, payload: Sequence[dict[str, Any]]) -> str | None:
    """The id of the failed full job ``job`` may resume, or None (a copy from zero)."""
    previous = (
        ReplicationJob.select()
        .where(ReplicationJob.context == job.context_id, ReplicationJob.id != job.id)
        .order_by(ReplicationJob.created_at.desc())
        .first()
    )
    if (
        previous is None
        or previous.status not in (JobStatus.FAILED.value, JobStatus.STOPPED.value)
        or previous.effective_type != "full"
        or previous.vma_seen_at is None  # never reached the VMA: nothing was copied
        or previous.vma_id != job.vma_id
        # its replica failed verification: what the checkpoint vouches for is not there
        or previous.error_class == "verify_mismatch"
    ):
        return None
    before = {d.disk_key: d.target_uri for d in JobDisk.select().where(JobDisk.job == previous.id)}
    now = {p["disk_key"]: p["target_uri"] for p in payload}
    return previous.id if before == now else None


def record(job: ReplicationJob, answer: dict[str, Any]) -> None:
    """Store the VMA's answer to a resume request as the job's ``resume`` event."""
    decision = answer.get("resume") if isinstance(answer, dict) else None
    if not isinstance(decision, dict):
        decision = {"resumed": False, "reason": "the VMA does not resume copies", "disks": {}}
    source = decision.get("from_job")
    if decision.get("resumed"):
        where = ", ".join(f"disk {k} at byte {v}" for k, v in sorted(decision["disks"].items()))
        message = f"resuming the full copy of job {source} ({where})"
    else:
        message = f"not resuming job {source}: {decision.get('reason')}; full copy from zero"
    with q.write_transaction():
        q.append_event(job.id, job.context_id, EVENT, message, data=decision)


def decision(job_id: str) -> dict[str, Any] | None:
    """The job's resume decision (the VMA's answer), None when it did not ask."""
    where = Where().eq("job_id", job_id).eq("kind", EVENT)
    row = first(JobEvent, where, order="at DESC, id DESC")  # the (job_id, at, id) index
    return row.data if row is not None else None
