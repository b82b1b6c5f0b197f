"""Pushes each replicating job's effective bandwidth limit to its VMA when it changes.

``oma worker`` ticks :meth:`BandwidthPusher.tick` every second: it reads the replicating jobs
and every bandwidth policy from the database, evaluates the limits at that moment
(:func:`oma.services.bandwidth.effective_limits`) and sends ``PUT /jobs/{id}/bandwidth`` to
the owning VMA for each job whose limit differs from what this worker last sent. So an edit
through the API, a window boundary, or a job starting or ending (the shares change) reaches
the VMA within a second, and migratekit within one more progress interval.

What was sent is remembered in memory only: a restarted worker sends every running job's
limit once, which also repairs a VMA that missed an update. Several workers may send the
same value; the VMA's write is idempotent. A VMA that is unreachable is retried next tick.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from migration_common import get_logger, utcnow

from ..database.db import database
from ..database.models import JobStatus, ReplicationJob, VmaAppliance
from ..database.repos import bandwidth as repo
from ..errors import VmaClientError
from .bandwidth import effective_limits

log = get_logger(__name__)


class BandwidthPusher:
    """Keeps the VMAs' per-job limits equal to the effective limits (see the module doc)."""

    def __init__(
        self, vma_for: Callable[[VmaAppliance], Any], clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.vma_for = vma_for
        self.clock = clock
        self.sent: dict[str, int | None] = {}

    def tick(self) -> int:
        """One pass; returns how many limits were sent."""
        with database.connection_context():
            rows = ReplicationJob.select(ReplicationJob.id, ReplicationJob.vma).where(
                ReplicationJob.status == JobStatus.REPLICATING.value
            )
            running = {r.id: r.vma_id for r in rows}
            for gone in set(self.sent) - set(running):
                del self.sent[gone]
            if not running:
                return 0
            glob, vmas, own = repo.all_policies()
            appliances = {
                v.id: v
                for v in VmaAppliance.select().where(
                    VmaAppliance.id.in_({v for v in running.values() if v})
                )
            }
        limits = effective_limits(
            self.clock(), running, global_policy=glob, vma_policies=vmas, job_policies=own
        )
        sent = 0
        for job_id, limit in limits.items():
            if job_id in self.sent and self.sent[job_id] == limit.effective:
                continue
            vma = appliances.get(running[job_id] or "")
            if vma is None:
                continue
            try:
                self.vma_for(vma).set_bandwidth(job_id, limit.effective)
            except VmaClientError as exc:
                status = getattr(exc, "status", None)
                log.warning(
                    "bandwidth limit not delivered",
                    job_id=job_id,
                    vma_id=vma.id,
                    limit_bps=limit.effective,
                    error=str(exc),
                )
                if status not in (404, 409):  # the VMA no longer runs it: nothing to retry
                    continue
            self.sent[job_id] = limit.effective
            sent += 1
            log.info(
                "bandwidth limit sent",
                job_id=job_id,
                vma_id=vma.id,
                limit_bps=limit.effective,
                job_bps=limit.job,
                vma_share_bps=limit.vma_share,
                global_share_bps=limit.global_share,
            )
        return sent
