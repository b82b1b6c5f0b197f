"""``oma worker``: one process running the OMA's background jobs under APScheduler 3.x.

:func:`run_worker` builds the worker's parts (:func:`build_worker`), reconciles NBD exports
with the database, then runs a ``BlockingScheduler`` with five jobs, each with an explicit
id, ``max_instances=1`` and ``coalesce=True``:

- ``heartbeat``       — refreshes this worker's ``worker_heartbeats`` row (health reads it);
- ``progress-poller`` — :class:`oma.services.poller.ProgressPoller` every ``OMA_POLL_INTERVAL``;
- ``workflow-runner`` — :class:`oma.services.runner.WorkflowRunner` every second (replication
  and cleanup workflows, stop requests, and export reconciliation once a minute);
- ``schedules``       — :class:`oma.services.schedules.ScheduleFirer` every
  :data:`SCHEDULE_TICK` seconds (fires due schedules once, whatever the number of workers);
- ``bandwidth``       — :class:`oma.services.bandwidth_push.BandwidthPusher` every second
  (sends changed effective bandwidth limits of replicating jobs to their VMAs).

All state lives in the database, so the process may be killed at any moment: a new worker
resumes polling on its first tick, takes over expired workflow leases (at once for its own
``OMA_WORKER_ID``) and restarts or cleans up exports. SIGTERM/SIGINT shut the scheduler down
(from a helper thread: see :func:`run_until_signal`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from migration_common import get_logger, setup_logging, utcnow

from ..database.db import database, init_db
from ..database.models import CloudStackTarget, VmaAppliance
from ..vma_client import VmaClient, verify_for
from ..workflows import kinds
from ..workflows.engine import WorkflowEngine
from ..workflows.failover.live import FailoverServices, guest_conversion_mode
from ..workflows.replicas import reconcile_attachments
from ..workflows.replication import ReplicationServices, ReplicationWorkflow
from ._queries import release_dead_local_leases
from .admission import Caps
from .bandwidth_push import BandwidthPusher
from .classify import Timeouts
from .exports import reconcile_exports
from .poller import ProgressPoller
from .runner import WorkflowRunner
from .schedules import ScheduleFirer

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""Signals that stop ``oma worker`` cleanly."""

SCHEDULE_TICK = 5.0
"""Seconds between two looks at the schedules (a cron occurrence fires at most this late)."""


class _ClientCache:
    """One client per row, rebuilt when the row's URL or secret changes."""

    def __init__(self, build: Any) -> None:
        self._build = build
        self._items: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def get(self, key: str, version: tuple[Any, ...], row: Any) -> Any:
        cached = self._items.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        if cached is not None and hasattr(cached[1], "close"):
            cached[1].close()
        client = self._build(row)
        self._items[key] = (version, client)
        return client

    def close(self) -> None:
        for _, client in self._items.values():
            if hasattr(client, "close"):
                client.close()
        self._items.clear()


@dataclass
class Worker:
    """The worker's parts, built once; ``run_worker`` schedules their ticks."""

    config: Any
    poller: ProgressPoller
    runner: WorkflowRunner
    engine: WorkflowEngine
    exports: Any
    started_at: datetime = field(default_factory=utcnow)
    schedules: ScheduleFirer = field(default_factory=ScheduleFirer)
    bandwidth: BandwidthPusher | None = None
    _caches: list[_ClientCache] = field(default_factory=list)

    def heartbeat(self) -> None:
        """Refresh this worker's heartbeat row."""
        import oma

        from ..database.repos import heartbeats

        with database.connection_context():
            heartbeats.beat(
                self.config.worker_id, version=oma.__version__, started_at=self.started_at
            )

    def poll(self) -> None:
        """One progress-poller tick (logged when it did something)."""
        result = self.poller.tick()
        if result.jobs:
            log.debug(
                "poller tick",
                jobs=result.jobs,
                updated=result.updated,
                completed=result.completed,
                failed=result.failed,
                fetch_s=round(result.fetch_seconds, 3),
                write_s=round(result.write_seconds, 3),
            )

    def run_workflows(self) -> None:
        """One workflow-runner tick (every kind of workflow)."""
        self.runner.tick()

    def push_bandwidth(self) -> None:
        """Send changed effective bandwidth limits of replicating jobs to their VMAs."""
        if self.bandwidth is not None:
            self.bandwidth.tick()

    def fire_schedules(self) -> None:
        """One schedule tick (due occurrences fire; earlier runs settle)."""
        self.schedules.tick()

    def reconcile(self) -> None:
        """Reconcile attachments and exports with CloudStack and the processes (at start)."""
        reconcile(self.runner.replication.s, self.config)

    def close(self) -> None:
        """Release HTTP clients and the poller's threads."""
        self.poller.close()
        for cache in self._caches:
            cache.close()


def reconcile(services: ReplicationServices, config: Any) -> None:
    """Replica rows agree with CloudStack (per target; one unreachable target is skipped),
    then exports agree with the rows and the running qemu-nbd processes."""
    with database.connection_context():
        targets = list(CloudStackTarget.select())
    for target in targets:
        try:
            with database.connection_context():
                reconcile_attachments(services.cloudstack_for(target), target, config.by_id_dir)
        except Exception as exc:  # CloudStack down: exports are still reconciled
            log.warning("cannot reconcile attachments", target_id=target.id, error=str(exc))
    reconcile_exports(services.exports, config.nbd_port_range, config.by_id_dir)


def nbd_credentials(config: Any) -> Path:
    """qemu-nbd's TLS credentials for the exports, issued by the OMA CA for the advertised
    (and a specific bind) address, reused across restarts."""
    import socket

    from ..nbd.tls import server_credentials

    wildcard = ("0.0.0.0", "::")
    advertised = config.nbd_advertise_host
    hosts = [socket.gethostname() if advertised in wildcard else advertised]
    if config.nbd_bind_host not in wildcard:
        hosts.append(config.nbd_bind_host)
    return server_credentials(Path(config.data_dir), hosts)


def build_worker(config: Any, *, exports: Any = None) -> Worker:
    """Connect the database and build the poller, engine, runner and export manager."""
    from ..cloudstack import CloudStackClient, wait_for_device
    from ..database.repos import targets as target_repo
    from ..nbd import ExportManager
    from ..secrets import secret_box

    Path(config.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    init_db(config.database_url)
    if config.auto_upgrade:
        from ..database.migrate import upgrade

        upgrade()
    box = secret_box(config)
    with database.connection_context():
        target_repo.encrypt_api_keys(box)  # keys stored in clear before they were encrypted

    vma_cache = _ClientCache(
        lambda row: VmaClient.for_appliance(row, box.decrypt(row.token_encrypted), config)
    )
    cs_cache = _ClientCache(
        lambda row: CloudStackClient(
            row.endpoint,
            target_repo.api_key(row, box),
            box.decrypt(row.secret_key_encrypted),
            poll_interval=config.cloudstack_poll_interval,
            verify=row.verify_tls,
        )
    )

    def vma_for(row: VmaAppliance) -> VmaClient:
        return vma_cache.get(row.id, (row.url, row.token_encrypted), row)

    def cloudstack_for(row: CloudStackTarget) -> Any:
        return cs_cache.get(
            row.id,
            (
                row.endpoint,
                row.api_key_encrypted,
                row.api_key,
                row.secret_key_encrypted,
                row.verify_tls,
            ),
            row,
        )

    if exports is None:
        exports = ExportManager(
            bind_host=config.nbd_bind_host,
            advertise_host=config.nbd_advertise_host,
            port_range=tuple(config.nbd_port_range),
            state_dir=Path(config.data_dir) / "exports",
            cache=getattr(config, "nbd_cache", "writeback"),
            aio=getattr(config, "nbd_aio", None),
            tls_dir=nbd_credentials(config),
            allow_plaintext=bool(getattr(config, "nbd_allow_plaintext", False)),
        )
    services = FailoverServices(
        cloudstack_for=cloudstack_for,
        vma_for=vma_for,
        exports=exports,
        by_id_dir=Path(config.by_id_dir),
        device_timeout=config.device_timeout,
        wait_for_device=wait_for_device,
        attach_budget=config.attach_budget,
        guest_conversion=guest_conversion_mode(config),
    )
    engine = WorkflowEngine(config.worker_id, lease_seconds=config.lease_timeout)
    runner = WorkflowRunner(
        engine,
        ReplicationWorkflow(services),
        vma_for,
        others=tuple(d for d in kinds.definitions(services) if d.kind != kinds.REPLICATION),
        maintenance=lambda: reconcile(services, config),
    )
    runner.admission.caps = Caps.from_config(config)
    poller = ProgressPoller(
        timeouts=Timeouts(
            vma_unreachable=config.vma_unreachable_timeout,
            job_lost=config.job_lost_timeout,
            stale=config.stale_timeout,
        ),
        vma_timeout=config.vma_timeout,
        token_for=lambda row: box.decrypt(row.token_encrypted),
        verify=verify_for(config),
        worker_id=config.worker_id,
        lease_seconds=max(3 * config.poll_interval, 15.0),
    )
    return Worker(
        config=config,
        poller=poller,
        runner=runner,
        engine=engine,
        exports=exports,
        bandwidth=BandwidthPusher(vma_for),
        _caches=[vma_cache, cs_cache],
    )


class _RunnerBusyFilter(logging.Filter):
    """Drop APScheduler's "skipped: maximum number of running instances" for the workflow
    runner: a long workflow simply spans several of its one-second ticks. (An overrunning
    progress poller is still reported.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("run_workflows" in message and "maximum number of running" in message)


def run_worker(config: Any) -> None:
    """Run ``oma worker`` until SIGTERM/SIGINT (see the module docstring).

    The stop signals are caught from the start, before the first heartbeat: a SIGTERM while
    the worker is still starting makes it stop cleanly as soon as the scheduler runs.
    """
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler

    setup_logging(config.log_level, json_lines=config.log_format == "json")
    logging.getLogger("apscheduler.scheduler").addFilter(_RunnerBusyFilter())
    # "Running job …" / "executed successfully" at every tick of every job: an idle worker
    # stays quiet at INFO (failures are still logged, by the executor and on_error)
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    scheduler = BlockingScheduler(
        executors={"default": ThreadPoolExecutor(4)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        timezone="UTC",
    )
    with stop_on_signal(scheduler):
        worker = build_worker(config)
        try:
            _start(worker, scheduler)
        finally:
            worker.close()
            log.info("worker stopped", worker_id=config.worker_id)


def _start(worker: Worker, scheduler: Any) -> None:
    """Take back leases, reconcile exports, beat once, then run the scheduled jobs."""
    from apscheduler.events import EVENT_JOB_ERROR

    config = worker.config
    with database.connection_context():
        released = worker.engine.release_own()
        dead = release_dead_local_leases(socket.gethostname())
    if released:
        log.info("took back workflows leased under this worker id", count=released)
    if dead:
        log.info("released the leases of dead workers on this host", workers=dead)
    worker.reconcile()
    worker.heartbeat()

    def on_error(event: Any) -> None:
        log.error(
            "scheduled job failed",
            job=event.job_id,
            error=repr(event.exception),
            traceback=event.traceback,
        )

    scheduler.add_listener(on_error, EVENT_JOB_ERROR)
    now = utcnow()
    for func, job_id, seconds in (
        (worker.heartbeat, "heartbeat", config.poll_interval),
        (worker.poll, "progress-poller", config.poll_interval),
        (worker.run_workflows, "workflow-runner", min(1.0, config.poll_interval)),
        (worker.fire_schedules, "schedules", SCHEDULE_TICK),
        (worker.push_bandwidth, "bandwidth", min(1.0, config.poll_interval)),
    ):
        scheduler.add_job(
            func, "interval", seconds=seconds, id=job_id, replace_existing=True, next_run_time=now
        )
    log.info(
        "worker started",
        worker_id=config.worker_id,
        poll_interval=config.poll_interval,
        database=database.obj.__class__.__name__,
    )
    scheduler.start()


@contextmanager
def stop_on_signal(scheduler: Any, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """While the block runs, ``signals`` shut ``scheduler`` (a ``BlockingScheduler``) down.

    The signal handler only writes the signal number to a pipe: it runs on the main thread
    between two bytecodes, possibly inside the thread pool's ``submit()`` holding the pool's
    non-reentrant shutdown lock, so calling ``scheduler.shutdown()`` (or taking any other
    lock) there could deadlock. A helper thread reads the pipe and shuts the scheduler down
    (waiting for it to start when the signal came earlier); ``start()`` then returns. The
    previous handlers are restored when the block ends.
    """
    from apscheduler.schedulers import SchedulerNotRunningError

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    ended = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        try:
            os.write(write_fd, bytes([signum]))
        except OSError:  # pipe full (a signal storm): one byte is enough
            pass

    def stopper() -> None:
        data = os.read(read_fd, 1)
        if not data:  # write end closed: the block ended by itself
            return
        log.info("worker stopping", signal=signal.Signals(data[0]).name)
        while not ended.is_set():
            try:
                scheduler.shutdown(wait=False)
                return
            except SchedulerNotRunningError:  # not started yet: stop once it is
                ended.wait(0.05)

    thread = threading.Thread(target=stopper, name="oma-worker-stop", daemon=True)
    thread.start()
    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        yield
    finally:
        ended.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(write_fd)
        thread.join()
        os.close(read_fd)


def run_until_signal(scheduler: Any, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
    """Start ``scheduler`` (a ``BlockingScheduler``) on this thread until one of ``signals``."""
    with stop_on_signal(scheduler, signals):
        scheduler.start()
