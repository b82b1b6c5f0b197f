"""The progress poller: every tick, read active jobs from the database and ask their VMAs.

There is no in-memory list of tracked jobs (the seed's fatal flaw): each tick selects every
job in ``replicating`` from the database, so a restarted worker resumes on its first tick.
With a ``worker_id`` (as in ``oma worker``) the tick first leases the jobs it polls (one
UPDATE; lease ``lease_seconds``), so several workers sharing PostgreSQL/MariaDB never poll the
same job and a dead worker's jobs move to another once its lease expires.
Jobs are grouped by owning VMA; each VMA gets one batched ``GET /progress?job_ids=…`` request
per 100 jobs (the id list must fit in one request line), and the VMAs are asked concurrently
from a thread pool. Each VMA's jobs are judged (:mod:`oma.services.classify`) as its answer
arrives; progress-only updates are written in chunks, one transaction and a few set-based
statements per chunk (:func:`oma.services._queries.write_progress`) — in the calling thread on
SQLite, by four connections side by side on PostgreSQL/MariaDB — while the other VMAs are still
answering. Completions, failures and stops (rare) are written last, one transaction per job
through :func:`oma.database.repos.jobs.finish_job`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime

from migration_common import JobProgress, get_logger, utcnow

from ..database.db import database, is_sqlite
from ..database.models import JobStatus, VmaAppliance
from ..database.repos import appliances
from ..database.repos.jobs import finish_job
from ..errors import VmaClientError, VmaUnreachable
from ..metrics import POLLER_TICK
from ..vma_client import VmaClient
from . import _queries as q
from .classify import (
    Action,
    Decision,
    ErrorClass,
    JobView,
    Timeouts,
    decide_not_found,
    decide_progress,
    decide_unreachable,
)

log = get_logger(__name__)

WRITERS = 4
"""Connections writing a tick's answers in parallel on PostgreSQL/MariaDB (SQLite: one)."""

BATCH_SIZE = 100
"""Job ids per batched progress request (100 uuids ≈ 3.7 kB, under gunicorn's 4 kB line)."""


@dataclass
class TickResult:
    """What one tick did (for logs, tests and the benchmark)."""

    jobs: int = 0
    vmas: int = 0
    updated: int = 0
    completed: int = 0
    failed: int = 0
    stopped: int = 0
    waiting: int = 0
    read_seconds: float = 0.0  # leasing and reading the replicating jobs
    fetch_seconds: float = 0.0
    write_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: TickResult) -> None:
        """Add another partial result's outcome counters to this one."""
        self.updated += other.updated
        self.completed += other.completed
        self.failed += other.failed
        self.stopped += other.stopped
        self.waiting += other.waiting
        self.errors += other.errors


@dataclass
class _Answer:
    progress: dict[str, JobProgress] = field(default_factory=dict)
    not_found: set[str] = field(default_factory=set)
    unreachable: str | None = None  # reason, when the VMA did not answer at all
    refused: str | None = None  # reason, when it answered with an error


class ProgressPoller:
    """Polls every replicating job's VMA and writes the answers (one instance per worker).

    ``token_for(appliance)`` returns a VMA's API token in clear (the worker decrypts the
    stored one with its SecretBox); ``verify`` is the CA file https VMAs are checked against.
    A revoked VMA is not called (its jobs see it as refusing).
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        vma_timeout: float = 30.0,
        token_for: Callable[[VmaAppliance], str],
        verify: bool | str = True,
        max_workers: int = 32,
        clock: Callable[[], datetime] = utcnow,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
    ) -> None:
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.timeouts = timeouts or Timeouts()
        self.vma_timeout = vma_timeout
        self.token_for = token_for
        self.verify = verify
        self.clock = clock
        self.started = clock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="poll")
        self._writers = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="poll-write")
        self._clients: dict[str, tuple[tuple[str, str], VmaClient]] = {}

    def close(self) -> None:
        """Stop the thread pool and close HTTP connections."""
        self._pool.shutdown(wait=True)
        self._writers.shutdown(wait=True)
        for _, client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, vma: VmaAppliance) -> VmaClient:
        """A pooled client per VMA, rebuilt when its URL or token changes."""
        key = (vma.url, vma.token_encrypted)
        cached = self._clients.get(vma.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        if cached is not None:
            cached[1].close()
        client = VmaClient(
            vma.url,
            self.token_for(vma),
            timeout=self.vma_timeout,
            retries=1,
            backoff=0.1,
            verify=self.verify,
            revoked=vma.revoked_at is not None,
        )
        self._clients[vma.id] = (key, client)
        return client

    def _fetch(self, client: VmaClient, job_ids: list[str]) -> _Answer:
        answer = _Answer()
        for start in range(0, len(job_ids), BATCH_SIZE):
            chunk = job_ids[start : start + BATCH_SIZE]
            try:
                found, missing = client.progress_batch(chunk)
            except VmaUnreachable as exc:
                answer.unreachable = str(exc)
                return answer
            except VmaClientError as exc:
                answer.refused = str(exc)
                return answer
            answer.progress.update({p.job_id: p for p in found})
            answer.not_found.update(missing)
            # a VMA that answers without mentioning an id: treat the id as unknown
            answer.not_found.update(i for i in chunk if i not in answer.progress)
        return answer

    def tick(self) -> TickResult:
        """One poll of every replicating job; never raises for a single job's trouble."""
        with POLLER_TICK.time():
            return self._tick()

    def _tick(self) -> TickResult:
        result = TickResult()
        with database.connection_context():
            started = time.monotonic()
            if self.worker_id is not None:
                q.claim_replicating(self.worker_id, self.clock(), self.lease_seconds)
            jobs, vmas = q.replicating_jobs(self.worker_id)
            result.read_seconds = time.monotonic() - started
            result.jobs = len(jobs)
            if not jobs:
                return result
            groups: dict[str | None, list[q.ActiveJob]] = {}
            for job in jobs:
                groups.setdefault(job.vma_id if job.vma_id in vmas else None, []).append(job)
            result.vmas = len([k for k in groups if k is not None])
            started = time.monotonic()
            pending = {
                self._pool.submit(self._fetch, self._client(vmas[vma_id]), [j.id for j in jobs]): (
                    vma_id
                )
                for vma_id, jobs in groups.items()
                if vma_id is not None
            }
            writes = _Writes(self, result)
            if None in groups:  # jobs whose VMA is gone
                writes.judge(groups[None], None, self.clock())
            answers: dict[str, _Answer] = {}
            for future in as_completed(pending):  # each VMA's jobs are written as it answers
                vma_id = pending[future]
                answers[vma_id] = future.result()
                writes.judge(groups[vma_id], answers[vma_id], self.clock())
            result.fetch_seconds = time.monotonic() - started
            started = time.monotonic()
            with q.write_transaction():  # operators see when each VMA last answered
                for vma_id, answer in answers.items():
                    appliances.mark_seen(vma_id, error=answer.unreachable or answer.refused)
            writes.finish(vmas, self.clock())
            result.write_seconds = time.monotonic() - started
        return result

    def _write_connected(
        self, chunk: list[q.ProgressWrite], now: datetime, result: TickResult
    ) -> None:
        with database.connection_context():
            self._write_updates(chunk, now, result)

    def _write_updates(
        self, chunk: list[q.ProgressWrite], now: datetime, result: TickResult
    ) -> None:
        """One transaction for a chunk of progress updates; when it fails, each job of the
        chunk is retried in its own transaction so one bad job cannot stop the others."""
        try:
            with q.write_transaction():
                q.relax_durability()
                lease = (
                    q.lease_expiry(now, self.lease_seconds) if self.worker_id is not None else None
                )
                result.updated += len(q.write_progress(chunk, now=now, lease_until=lease))
        except Exception as exc:
            if len(chunk) > 1:
                log.warning(
                    "a chunk of progress updates failed; writing job by job", error=str(exc)
                )
                for one in chunk:
                    self._write_updates([one], now, result)
                return
            log.exception("poller could not store a job's progress", job_id=chunk[0].job_id)
            result.errors.append(f"{chunk[0].job_id}: {exc}")

    def _decide(self, job: q.ActiveJob, answer: _Answer | None, now: datetime) -> Decision:
        view = JobView(
            job_id=job.id,
            disk_keys=job.disk_keys,
            status="running" if job.status == "replicating" else job.status,
            phase=job.phase,
            bytes_done=job.bytes_done,
            started_at=job.started_at,
            last_progress_at=job.last_progress_at,
            vma_seen_at=job.vma_seen_at,
            watch_since=self.started,
            verify=job.verify,
        )
        if answer is None:
            return Decision(
                Action.FAIL,
                error_class=ErrorClass.VMA_ERROR,
                message="the job's VMA is no longer registered",
            )
        if answer.unreachable is not None:
            return decide_unreachable(view, now, self.timeouts, answer.unreachable)
        if answer.refused is not None:
            # the VMA answers but refuses (bad token, 5xx): same clock as unreachable
            return decide_unreachable(view, now, self.timeouts, answer.refused)
        progress = answer.progress.get(job.id)
        if progress is None:
            return decide_not_found(view, now, self.timeouts)
        return decide_progress(view, progress, now, self.timeouts)

    def _finish(
        self,
        job: q.ActiveJob,
        decision: Decision,
        now: datetime,
        result: TickResult,
        vma: VmaAppliance | None,
    ) -> None:
        """Complete, stop or fail one job (its last progress written in the same transaction);
        :func:`finish_job` moves it only from ``replicating``, so it ends exactly once."""
        with q.write_transaction():
            if decision.progress is not None:
                written = q.write_progress([_progress_write(job, decision)], now=now)
                if job.id not in written:
                    return  # no longer replicating (stopped by an operator meanwhile)
            if decision.action is Action.COMPLETE:
                assert decision.progress is not None
                if finish_job(
                    job.id,
                    JobStatus.COMPLETED,
                    now=now,
                    from_statuses=[JobStatus.REPLICATING],
                    change_ids={
                        d.disk_key: d.change_id for d in decision.progress.disks if d.change_id
                    },
                ):
                    result.completed += 1
                    log.info(
                        "replication completed", job_id=job.id, bytes=decision.progress.bytes_done
                    )
                return
            if decision.action is Action.STOP:
                if finish_job(
                    job.id,
                    JobStatus.STOPPED,
                    now=now,
                    message=decision.message,
                    from_statuses=[JobStatus.REPLICATING],
                ):
                    result.stopped += 1
                return
            q.fail_disks(job.id, decision.message or "failed", now)
            moved = finish_job(
                job.id,
                JobStatus.FAILED,
                now=now,
                error_class=decision.error_class.value if decision.error_class else None,
                message=decision.message,
                from_statuses=[JobStatus.REPLICATING],
            )
        if moved:
            result.failed += 1
            log.warning(
                "replication failed",
                job_id=job.id,
                error_class=decision.error_class,
                error=decision.message,
            )
            if decision.error_class is ErrorClass.STALLED and vma is not None:
                self._stop_on_vma(job.id, vma)

    def _stop_on_vma(self, job_id: str, vma: VmaAppliance) -> None:
        """Best effort: tell the VMA to stop a job we gave up on, so it stops writing."""
        try:
            self._client(vma).stop_job(job_id)
        except VmaClientError as exc:
            log.warning("could not stop the stalled job on the VMA", job_id=job_id, error=str(exc))


class _Writes:
    """One tick's writes: judges each VMA's jobs as its answer arrives and writes the
    progress-only ones in chunks of :data:`oma.services._queries.WRITE_CHUNK` — on SQLite in
    the calling thread, on PostgreSQL/MariaDB on :data:`WRITERS` connections side by side —
    while the other VMAs are still being asked; completions and failures come last."""

    def __init__(self, poller: ProgressPoller, result: TickResult) -> None:
        self.poller = poller
        self.result = result
        self.updates: list[q.ProgressWrite] = []
        self.finals: list[tuple[q.ActiveJob, Decision, datetime]] = []
        self.parts: list[tuple[Future[None], TickResult]] = []
        self.serial = is_sqlite()

    def judge(self, jobs: list[q.ActiveJob], answer: _Answer | None, now: datetime) -> None:
        """Decide each job of one VMA's answer; write every full chunk of updates."""
        for job in jobs:
            try:
                decision = self.poller._decide(job, answer, now)
            except Exception as exc:  # one bad answer must not stop the tick
                log.exception("poller could not judge a job's progress", job_id=job.id)
                self.result.errors.append(f"{job.id}: {exc}")
                continue
            if decision.action is Action.NOTHING:
                self.result.waiting += 1
            elif decision.action is Action.UPDATE:
                self.updates.append(_progress_write(job, decision))
            else:
                self.finals.append((job, decision, now))
        while len(self.updates) >= q.WRITE_CHUNK:
            self._flush(self.updates[: q.WRITE_CHUNK], now)
            del self.updates[: q.WRITE_CHUNK]

    def finish(self, vmas: dict[str, VmaAppliance], now: datetime) -> None:
        """Write the last updates, wait for every chunk, then end the finished jobs (rare:
        one transaction each, through :func:`finish_job`)."""
        if self.updates:
            self._flush(self.updates, now)
            self.updates = []
        for future, part in self.parts:
            future.result()
            self.result.merge(part)
        for job, decision, decided in self.finals:
            try:
                self.poller._finish(job, decision, decided, self.result, vmas.get(job.vma_id or ""))
            except Exception as exc:  # one bad job must not stop the tick
                log.exception("poller could not end a job", job_id=job.id)
                self.result.errors.append(f"{job.id}: {exc}")

    def _flush(self, chunk: list[q.ProgressWrite], now: datetime) -> None:
        if self.serial:  # SQLite has one writer at a time anyway
            self.poller._write_updates(chunk, now, self.result)
            return
        part = TickResult()
        self.parts.append(
            (self.poller._writers.submit(self.poller._write_connected, chunk, now, part), part)
        )


def _progress_write(job: q.ActiveJob, decision: Decision) -> q.ProgressWrite:
    assert decision.progress is not None
    return q.ProgressWrite(
        job_id=job.id,
        context_id=job.context_id,
        progress=decision.progress,
        advanced=decision.advanced,
        events=tuple(decision.events),
    )
