"""The workflow runner: turns pending jobs into workflows, runs them, honours stop requests.

One tick (an APScheduler job in ``oma worker``):

1. stop requests — a ``replicating`` job with ``stop_requested`` is stopped on its VMA (an
   unknown job there is fine) and marked ``stopped``; jobs still being provisioned stop at
   their workflow's next step;
2. new jobs — every ``pending`` job without a workflow gets one when its replicas fit on the
   OMA VM within the attach budget (:mod:`oma.services.admission`, under a lock of the target
   rows, so two workers never both create it); the others wait with a reason; a test
   failover past its ``auto_end_after`` gets its end workflow
   (:func:`oma.workflows.failover.test.end_due_tests`);
3. workflows — claims runnable workflows of every kind (replication, cleanup, failover,
   rollback: :mod:`oma.workflows.kinds`) one at a time, oldest first (lease; an expired lease
   of a dead worker is taken over) and runs each to its end, to the replicating hand-off, or
   until a step waits; a workflow runs at most once per tick, and at most ``max_per_tick``
   workflows that did not just wait run per tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from migration_common import get_logger, utcnow

from ..database.db import database
from ..database.models import JobDisk, JobStatus, ReplicationJob, VmaAppliance, Workflow
from ..database.repos.jobs import finish_job
from ..errors import VmaClientError
from ..vma_client import error_status
from ..workflows.engine import Definition, WorkflowEngine
from ..workflows.failover.test import end_due_tests
from ..workflows.replicas import foreign_volumes
from ..workflows.replication import ReplicationWorkflow
from . import _queries as q
from .admission import Admission

log = get_logger(__name__)


class WorkflowRunner:
    """Runs the replication workflows of one worker."""

    def __init__(
        self,
        engine: WorkflowEngine,
        replication: ReplicationWorkflow,
        vma_for: Callable[[VmaAppliance], Any],
        *,
        others: tuple[Definition, ...] = (),
        maintenance: Callable[[], Any] | None = None,
        maintenance_every: float = 60.0,
        max_per_tick: int = 20,
    ) -> None:
        self.engine = engine
        self.replication = replication
        self.vma_for = vma_for
        self.definitions = {d.kind: d for d in (replication.definition, *others)}
        self.maintenance = maintenance
        self.maintenance_every = maintenance_every
        self.max_per_tick = max_per_tick
        services = replication.s
        self.admission = Admission(
            services.attach_budget,
            lambda target: foreign_volumes(services.cloudstack_for(target), target),
        )
        self._last_maintenance = time.monotonic()

    def tick(self) -> dict[str, int]:
        """One pass: maintenance (when due), stop requests, new workflows, then workflows.

        Maintenance (export reconciliation) runs in this same thread, so it never sees an
        export a workflow step started a moment ago but has not recorded yet.
        """
        counts = {"stopped": 0, "created": 0, "swept": 0, "test_ends": 0, "ran": 0, "waiting": 0}
        if self.maintenance and time.monotonic() - self._last_maintenance >= self.maintenance_every:
            self._last_maintenance = time.monotonic()
            self.maintenance()
        with database.connection_context():
            counts["stopped"] = self.handle_stop_requests()
            counts["created"] = self.create_workflows()
            counts["swept"] = self.sweep_orphaned_jobs()
            counts["test_ends"] = end_due_tests(utcnow())  # test failovers past auto_end_after
            ran: list[str] = []
            # a waiting workflow (a failover waiting for its final sync) does not use up the
            # tick: else as many older waiting workflows take every turn from the syncs they
            # wait for. Each workflow runs at most once per tick, so the loop ends.
            while counts["ran"] - counts["waiting"] < self.max_per_tick:
                wf = self.engine.claim(list(self.definitions), exclude=ran)
                if wf is None:
                    break
                ran.append(wf.id)
                counts["ran"] += 1
                try:
                    outcome = self.engine.run(wf, self.definitions[wf.kind])
                except Exception:  # the engine records step failures; this is a bug guard
                    log.exception("workflow crashed", workflow_id=wf.id, job_id=wf.job_id)
                    continue
                if outcome == "waiting":
                    counts["waiting"] += 1
                else:
                    log.info("workflow ended", workflow_id=wf.id, kind=wf.kind, outcome=outcome)
        return counts

    def create_workflows(self) -> int:
        """Start a replication workflow for each pending job whose replicas fit on the OMA VM
        (:class:`oma.services.admission.Admission`); the others wait with a reason."""

        def create(job: ReplicationJob) -> None:
            # claimed: an operator's stop now waits for the workflow's next step
            ReplicationJob.update(
                claimed_by=self.engine.worker_id, wait_reason=None, updated_at=utcnow()
            ).where(ReplicationJob.id == job.id).execute()
            self.engine.create(
                self.replication.definition, context_id=job.context_id, job_id=job.id
            )

        return self.admission.admit(create)

    def sweep_orphaned_jobs(self) -> int:
        """Fail jobs still being provisioned whose workflow has already ended.

        The workflow's own failure handling finishes the job; if that itself failed (the
        database went away at that moment), this keeps the job from staying active forever.
        """
        ended = Workflow.select(Workflow.job).where(
            Workflow.kind == self.replication.definition.kind,
            Workflow.status.in_(["done", "failed"]),
        )
        stuck = list(
            ReplicationJob.select(ReplicationJob.id).where(
                ReplicationJob.status.in_(
                    [JobStatus.PENDING.value, JobStatus.PROVISIONING.value, JobStatus.READY.value]
                ),
                ReplicationJob.id.in_(ended),
            )
        )
        swept = 0
        for job in stuck:
            with q.write_transaction():
                if finish_job(
                    job.id,
                    JobStatus.FAILED,
                    error_class="internal",
                    message="its provisioning workflow ended without finishing the job",
                    from_statuses=[JobStatus.PENDING, JobStatus.PROVISIONING, JobStatus.READY],
                ):
                    swept += 1
        return swept

    def handle_stop_requests(self) -> int:
        """Stop replicating jobs an operator asked to stop (VMA first, then the row)."""
        stopped = 0
        jobs = list(
            ReplicationJob.select().where(
                ReplicationJob.stop_requested == True,  # noqa: E712
                ReplicationJob.status == JobStatus.REPLICATING.value,
            )
        )
        for job in jobs:
            vma = VmaAppliance.get_or_none(VmaAppliance.id == job.vma_id)
            if vma is not None:
                try:
                    self.vma_for(vma).stop_job(job.id)
                except VmaClientError as exc:
                    if error_status(exc) != 404:
                        log.warning(
                            "VMA could not stop the job; will retry", job_id=job.id, error=str(exc)
                        )
                        continue
            now = utcnow()
            with q.write_transaction():
                (
                    JobDisk.update(status="stopped", updated_at=now)
                    .where(JobDisk.job == job.id, JobDisk.status.in_(["queued", "running"]))
                    .execute()
                )
                if finish_job(
                    job.id,
                    JobStatus.STOPPED,
                    now=now,
                    message="stopped by operator",
                    from_statuses=[JobStatus.REPLICATING],
                ):
                    stopped += 1
        return stopped
