"""Prometheus metrics of the OMA: read from the database at scrape time, plus the worker's own.

The OMA runs as several processes (``oma serve`` under gunicorn with several workers, and one
or more ``oma worker``), so metrics are split by where the truth lives:

- Everything the database knows — jobs by status, bytes moved, throughput, VMA reachability,
  NBD exports, attached volumes, failures — is computed at scrape time by
  :class:`DatabaseCollector`: a handful of aggregate ``SELECT``\\ s (``GROUP BY`` on indexed
  columns; only ``replicating`` jobs are read one by one), so any API process answers the
  same numbers and nothing is lost when a process restarts. ``oma serve`` exposes them at
  ``GET /metrics`` (a bearer token, viewer role or higher).
- What only a worker sees while it works — how long each poller tick takes and how long each
  workflow step took — lives in that worker's memory (:data:`WORKER_REGISTRY`) and is served
  by the worker itself on ``OMA_METRICS_BIND`` (:func:`serve_worker_metrics`), a separate,
  unauthenticated listener that is off by default and binds to loopback when no host is given.
  Prometheus sums the workers' histograms.

Metric names are listed in :data:`API_METRICS` and :data:`WORKER_METRICS`; docs/metrics.md
describes each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .database.db import database
from .database.models import JobStatus, VmaAppliance, WorkflowStep
from .services.classify import ErrorClass

ON_OMA = ("attaching", "attached", "detaching")
"""Replica volume states that occupy a slot of the OMA VM's attach budget."""

SYNC_TYPES = ("full", "incremental")

API_METRICS = (
    "oma_replication_jobs",
    "oma_replication_bytes",
    "oma_replication_failures",
    "oma_job_throughput_bytes_per_second",
    "oma_vma_throughput_bytes_per_second",
    "oma_vma_up",
    "oma_vma_last_seen_timestamp_seconds",
    "oma_nbd_exports",
    "oma_attached_volumes",
    "oma_attach_budget_volumes",
    "oma_workflows",
)
"""Families :class:`DatabaseCollector` yields (``GET /metrics`` of ``oma serve``)."""

WORKER_METRICS = ("oma_poller_tick_duration_seconds", "oma_workflow_step_duration_seconds")
"""Families of :data:`WORKER_REGISTRY` (``OMA_METRICS_BIND`` of ``oma worker``)."""

WORKER_REGISTRY = CollectorRegistry()
"""The worker process's own metrics (histograms observed in memory, plus process_*)."""

POLLER_TICK = Histogram(
    "oma_poller_tick_duration_seconds",
    "Duration of one progress-poller tick (ask every VMA, write every answer).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=WORKER_REGISTRY,
)
STEP_DURATION = Histogram(
    "oma_workflow_step_duration_seconds",
    "Duration of a workflow step from its start to done or failed (waiting included).",
    ["kind", "step", "outcome"],
    buckets=(0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
    registry=WORKER_REGISTRY,
)
ProcessCollector(namespace="oma_worker", registry=WORKER_REGISTRY)


def observe_step(kind: str, row: WorkflowStep) -> None:
    """Record a finished (done or failed) step's duration from its row's timestamps."""
    if row.started_at is None or row.finished_at is None:
        return
    seconds = (row.finished_at - row.started_at).total_seconds()
    STEP_DURATION.labels(kind, row.name, row.status).observe(max(seconds, 0.0))


def serve_worker_metrics(bind: tuple[str, int] | None) -> Any:
    """Serve :data:`WORKER_REGISTRY` over HTTP on ``bind`` (host, port) in a daemon thread;
    returns the server (None when ``bind`` is None: metrics off)."""
    if bind is None:
        return None
    from prometheus_client import start_http_server

    from migration_common import ConfigError

    try:
        server, _thread = start_http_server(bind[1], addr=bind[0], registry=WORKER_REGISTRY)
    except OSError as exc:
        raise ConfigError(
            "OMA_METRICS_BIND", f"cannot listen on {bind[0]}:{bind[1]} ({exc.strerror})"
        ) from exc
    return server


def _rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return list(database.execute_sql(sql.format(p=database.param), params).fetchall())


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch of a stored ``last_seen_at`` (each driver returns its own type)."""
    if value is None:
        return None
    moment = VmaAppliance.last_seen_at.python_value(value)
    return moment.timestamp() if isinstance(moment, datetime) else None


class DatabaseCollector(Collector):
    """The OMA's state as metrics, read from the database at each scrape (see the module
    docstring); ``attach_budget`` is ``OMA_ATTACH_BUDGET``."""

    def __init__(self, attach_budget: int) -> None:
        self.attach_budget = attach_budget

    def describe(self) -> list[Metric]:
        """No description up front: registering must not touch the database."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family of :data:`API_METRICS`, on the current connection (opened if closed)."""
        opened = database.is_closed()
        if opened:
            database.connect()
        try:
            yield from self._jobs()
            yield from self._throughput()
            yield from self._vmas()
            yield from self._volumes()
            yield from self._workflows()
        finally:
            if opened:
                database.close()

    def _jobs(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "oma_replication_jobs", "Replication jobs by status.", labels=["status"]
        )
        counts = {s.value: 0 for s in JobStatus}
        for status, n in _rows("SELECT status, COUNT(*) FROM replication_jobs GROUP BY status"):
            counts[status] = int(n)
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs

        moved = CounterMetricFamily(
            "oma_replication_bytes",
            "Bytes moved by replication jobs (done so far, every job), by sync type.",
            labels=["sync_type"],
        )
        sums = dict.fromkeys(SYNC_TYPES, 0)
        for kind, total in _rows(
            "SELECT effective_type, SUM(bytes_done) FROM replication_jobs "
            "WHERE effective_type IS NOT NULL GROUP BY effective_type"
        ):
            sums[kind] = int(total or 0)
        for kind, total in sums.items():
            moved.add_metric([kind], total)
        yield moved

        failures = CounterMetricFamily(
            "oma_replication_failures",
            "Failed replication jobs by error class.",
            labels=["error_class"],
        )
        classes = {c.value: 0 for c in ErrorClass}
        for error_class, n in _rows(
            "SELECT error_class, COUNT(*) FROM replication_jobs WHERE status = {p} "
            "GROUP BY error_class",
            JobStatus.FAILED.value,
        ):
            classes[error_class or "unknown"] = int(n)
        for error_class, n in classes.items():
            failures.add_metric([error_class], n)
        yield failures

    def _throughput(self) -> Iterator[Metric]:
        per_job = GaugeMetricFamily(
            "oma_job_throughput_bytes_per_second",
            "Throughput of each replicating job as last reported by its VMA.",
            labels=["job_id", "vm", "vma"],
        )
        per_vma = GaugeMetricFamily(
            "oma_vma_throughput_bytes_per_second",
            "Sum of the throughput of each VMA's replicating jobs.",
            labels=["vma"],
        )
        sums = {name: 0.0 for (name,) in _rows("SELECT name FROM vma_appliances")}
        for job_id, vm, vma, bps in _rows(
            "SELECT j.id, c.name, v.name, j.throughput_bps FROM replication_jobs j "
            "JOIN vm_contexts c ON c.id = j.context_id "
            "LEFT JOIN vma_appliances v ON v.id = j.vma_id WHERE j.status = {p}",
            JobStatus.REPLICATING.value,
        ):
            per_job.add_metric([job_id, vm, vma or ""], float(bps or 0))
            if vma is not None:
                sums[vma] = sums.get(vma, 0.0) + float(bps or 0)
        for vma, bps in sums.items():
            per_vma.add_metric([vma], bps)
        yield per_job
        yield per_vma

    def _vmas(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "oma_vma_up",
            "1 when the OMA's last call to the VMA was answered, else 0 (never seen: 0).",
            labels=["vma"],
        )
        seen = GaugeMetricFamily(
            "oma_vma_last_seen_timestamp_seconds",
            "When the VMA last answered the OMA (seconds since the epoch).",
            labels=["vma"],
        )
        for name, last_seen, last_error in _rows(
            "SELECT name, last_seen_at, last_error FROM vma_appliances"
        ):
            stamp = _timestamp(last_seen)
            up.add_metric([name], 1 if stamp is not None and last_error is None else 0)
            if stamp is not None:
                seen.add_metric([name], stamp)
        yield up
        yield seen

    def _volumes(self) -> Iterator[Metric]:
        exports = GaugeMetricFamily(
            "oma_nbd_exports", "NBD exports of replica volumes by state.", labels=["state"]
        )
        counts = dict.fromkeys(("starting", "running"), 0)
        for state, n in _rows("SELECT state, COUNT(*) FROM nbd_exports GROUP BY state"):
            counts[state] = int(n)
        for state, n in counts.items():
            exports.add_metric([state], n)
        yield exports

        attached = GaugeMetricFamily(
            "oma_attached_volumes",
            "Replica volumes attached (or attaching/detaching) to each OMA VM.",
            labels=["oma_vm"],
        )
        per_vm = {vm: 0 for (vm,) in _rows("SELECT DISTINCT oma_vm_id FROM cloudstack_targets")}
        marks = ", ".join([database.param] * len(ON_OMA))
        for vm, n in database.execute_sql(
            "SELECT attached_vm_id, COUNT(*) FROM replica_volumes "
            f"WHERE attached_vm_id IS NOT NULL AND state IN ({marks}) GROUP BY attached_vm_id",
            ON_OMA,
        ).fetchall():
            per_vm[vm] = int(n)
        for vm, n in per_vm.items():
            attached.add_metric([vm], n)
        yield attached
        yield GaugeMetricFamily(
            "oma_attach_budget_volumes",
            "Attached volumes allowed per OMA VM (OMA_ATTACH_BUDGET).",
            value=self.attach_budget,
        )

    def _workflows(self) -> Iterator[Metric]:
        flows = GaugeMetricFamily(
            "oma_workflows", "Workflows by kind and status.", labels=["kind", "status"]
        )
        for kind, status, n in _rows(
            "SELECT kind, status, COUNT(*) FROM workflows GROUP BY kind, status"
        ):
            flows.add_metric([kind, status], int(n))
        yield flows


def api_registry(attach_budget: int) -> CollectorRegistry:
    """A registry holding only a :class:`DatabaseCollector` (what ``GET /metrics`` serves)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(attach_budget))
    return registry


__all__ = [
    "API_METRICS",
    "POLLER_TICK",
    "STEP_DURATION",
    "WORKER_METRICS",
    "WORKER_REGISTRY",
    "DatabaseCollector",
    "api_registry",
    "observe_step",
    "serve_worker_metrics",
]
