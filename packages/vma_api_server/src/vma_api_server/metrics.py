"""``GET /metrics``: the VMA's jobs in Prometheus' text format (the API token, like every route).

Everything is read from the job database at scrape time (:class:`JobCollector`): jobs by
status, bytes moved per sync type (the last accepted progress update of every disk, summed in
SQLite), the throughput of each running job, and whether the vCenter the VMA works with
accepts a TCP connection (only when one is configured or remembered).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from vma.errors import VcenterNotConfiguredError
from vma.services.store import database
from vma.services.vcenter import VcenterProvider

from .api._services import services

bp = Blueprint("metrics", __name__)

STATUSES = ("queued", "running", "completed", "failed", "stopped")
SYNC_TYPES = ("full", "incremental")
VCENTER_TIMEOUT = 2.0
"""Seconds a scrape waits for the vCenter's TCP port before reporting it unreachable."""

METRICS = (
    "vma_jobs",
    "vma_replication_bytes",
    "vma_job_throughput_bytes_per_second",
    "vma_vcenter_configured",
    "vma_vcenter_reachable",
)
"""The families :class:`JobCollector` yields."""


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=VCENTER_TIMEOUT):
            return True
    except OSError:
        return False


class JobCollector(Collector):
    """The VMA's job database (and its vCenter's reachability) as metrics, at each scrape."""

    def __init__(self, vcenter: VcenterProvider) -> None:
        self.vcenter = vcenter

    def describe(self) -> list[Metric]:
        """No description up front: registering must not touch the database."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family of :data:`METRICS`."""
        jobs = GaugeMetricFamily("vma_jobs", "Replication jobs by status.", labels=["status"])
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in database.execute_sql("SELECT status, COUNT(*) FROM job GROUP BY status"):
            counts[status] = int(n)
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs

        moved = CounterMetricFamily(
            "vma_replication_bytes",
            "Bytes moved by replication jobs (done so far, every disk of every job), by sync type.",
            labels=["sync_type"],
        )
        sums = dict.fromkeys(SYNC_TYPES, 0)
        for kind, total in database.execute_sql(
            "SELECT j.sync_type, SUM(json_extract(d.progress, '$.bytes_done')) FROM jobdisk d "
            "JOIN job j ON j.job_id = d.job_id WHERE d.progress IS NOT NULL GROUP BY j.sync_type"
        ):
            sums[kind] = int(total or 0)
        for kind, total in sums.items():
            moved.add_metric([kind], total)
        yield moved

        throughput = GaugeMetricFamily(
            "vma_job_throughput_bytes_per_second",
            "Throughput of each running job (its disks' last reported throughput, summed).",
            labels=["job_id", "vm_id"],
        )
        for job_id, vm_id, bps in database.execute_sql(
            "SELECT j.job_id, j.vm_id,"
            " SUM(COALESCE(json_extract(d.progress, '$.throughput_bps'), 0))"
            " FROM job j LEFT JOIN jobdisk d ON d.job_id = j.job_id WHERE j.status = 'running'"
            " GROUP BY j.job_id, j.vm_id"
        ):
            throughput.add_metric([job_id, vm_id], float(bps or 0))
        yield throughput
        yield from self._vcenter()

    def _vcenter(self) -> Iterator[Metric]:
        try:
            creds = self.vcenter.credentials()
        except VcenterNotConfiguredError:
            creds = None
        yield GaugeMetricFamily(
            "vma_vcenter_configured",
            "1 when the VMA has vCenter credentials (configured, or remembered from discovery).",
            value=0 if creds is None else 1,
        )
        reachable = GaugeMetricFamily(
            "vma_vcenter_reachable",
            "1 when the vCenter's API port accepts a TCP connection (only with credentials).",
            labels=["vcenter"],
        )
        if creds is not None:
            reachable.add_metric(
                [f"{creds.host}:{creds.port}"], 1 if _reachable(creds.host, creds.port) else 0
            )
        yield reachable


def _registry() -> CollectorRegistry:
    """This app's registry (built once per app)."""
    registry = current_app.extensions.get("vma_metrics")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(JobCollector(services().vcenter))
        current_app.extensions["vma_metrics"] = registry
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    """Jobs, bytes moved, throughput and vCenter reachability for Prometheus."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(_registry()), content_type=content_type)
