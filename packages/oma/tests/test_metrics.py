"""The OMA's Prometheus metrics: ``GET /metrics`` (database collector) and the worker's own
histograms (poller ticks, workflow steps) on ``OMA_METRICS_BIND``."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from migration_common import ConfigError, utcnow

MiB = 1 << 20


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition (parsed by prometheus_client)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def scrape(client: Any, headers: dict[str, str]) -> dict:
    res = client.get("/metrics", headers=headers)
    assert res.status_code == 200, res.data
    assert res.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(res.get_data(as_text=True))


def seed(app: Any) -> dict[str, str]:
    """Two VMAs, a target, four VMs with jobs in several states, volumes, exports, workflows."""
    from oma.database import database
    from oma.database.models import (
        CloudStackTarget,
        NbdExport,
        ReplicationJob,
        ReplicaVolume,
        VmaAppliance,
        VmContext,
        Workflow,
    )

    with app.app_context(), database.connection_context():
        up = VmaAppliance.create(
            name="vma-up", url="http://127.0.0.1:9", token_encrypted="x", last_seen_at=utcnow()
        )
        down = VmaAppliance.create(
            name="vma-down",
            url="http://127.0.0.1:9",
            token_encrypted="x",
            last_seen_at=utcnow() - timedelta(minutes=5),
            last_error="connection refused",
        )
        CloudStackTarget.create(
            name="cs",
            endpoint="http://127.0.0.1:9/client/api",
            api_key="k",
            secret_key_encrypted="x",
            zone_id="z",
            oma_vm_id="oma-vm-1",
        )
        ctx = [
            VmContext.create(vcenter="vc", vm_id=str(uuid.uuid4()), name=f"vm-{i}", vma=up)
            for i in range(4)
        ]
        running = ReplicationJob.create(
            context=ctx[0],
            vma=up,
            status="replicating",
            active_context_id=ctx[0].id,
            effective_type="full",
            bytes_total=64 * MiB,
            bytes_done=16 * MiB,
            throughput_bps=8 * MiB,
        )
        ReplicationJob.create(
            context=ctx[1],
            vma=up,
            status="replicating",
            active_context_id=ctx[1].id,
            effective_type="incremental",
            bytes_done=MiB,
            throughput_bps=2 * MiB,
        )
        ReplicationJob.create(
            context=ctx[2], vma=down, status="completed", effective_type="full", bytes_done=32 * MiB
        )
        ReplicationJob.create(
            context=ctx[2],
            vma=down,
            status="failed",
            effective_type="full",
            bytes_done=MiB,
            error_class="vma_unreachable",
        )
        ReplicationJob.create(context=ctx[3], status="failed", error_class="stalled")
        ReplicationJob.create(context=ctx[3], status="pending", active_context_id=ctx[3].id)
        vols = [
            ReplicaVolume.create(
                context=ctx[0], disk_key="2000", size_bytes=MiB, state=state, attached_vm_id=vm
            )
            for state, vm in (
                ("attached", "oma-vm-1"),
                ("attaching", "oma-vm-1"),
                ("detached", None),
                ("attached", "oma-vm-2"),
            )
        ]
        NbdExport.create(
            volume=vols[0], host="127.0.0.1", port=10100, export_name="a", state="running"
        )
        NbdExport.create(
            volume=vols[1], host="127.0.0.1", port=10101, export_name="b", state="running"
        )
        Workflow.create(kind="replication", status="done", context=ctx[0])
        Workflow.create(kind="failover", status="failed", context=ctx[1])
    return {"running": running.id, "ctx0": ctx[0].id}


def test_metrics_needs_a_token_and_a_viewer_is_enough(client: Any, auth: Any) -> None:
    res = client.get("/metrics")
    assert res.status_code == 401
    assert res.json["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    found = scrape(client, auth.viewer)
    assert value(found, "oma_replication_jobs", status="pending") == 0
    assert value(found, "oma_attach_budget_volumes") == 24


def test_collector_reports_the_database(any_app: Any) -> None:
    from oma.database import database
    from oma.database.models import ReplicationJob
    from oma.database.repos import tokens

    ids = seed(any_app)
    with any_app.app_context(), database.connection_context():
        viewer = {"Authorization": f"Bearer {tokens.create_token('prometheus', 'viewer')[1]}"}
    client = any_app.test_client()
    found = scrape(client, viewer)

    assert value(found, "oma_replication_jobs", status="replicating") == 2
    assert value(found, "oma_replication_jobs", status="failed") == 2
    assert value(found, "oma_replication_jobs", status="pending") == 1
    assert value(found, "oma_replication_jobs", status="stopped") == 0
    assert value(found, "oma_replication_bytes_total", sync_type="full") == 49 * MiB
    assert value(found, "oma_replication_bytes_total", sync_type="incremental") == MiB
    assert value(found, "oma_replication_failures_total", error_class="vma_unreachable") == 1
    assert value(found, "oma_replication_failures_total", error_class="stalled") == 1
    assert value(found, "oma_replication_failures_total", error_class="job_lost") == 0
    job = value(
        found, "oma_job_throughput_bytes_per_second", job_id=ids["running"], vm="vm-0", vma="vma-up"
    )
    # (MariaDB stores FloatField columns as single-precision FLOAT)
    assert job == pytest.approx(8 * MiB, rel=1e-5)
    per_vma = value(found, "oma_vma_throughput_bytes_per_second", vma="vma-up")
    assert per_vma == pytest.approx(10 * MiB, rel=1e-5)
    assert value(found, "oma_vma_throughput_bytes_per_second", vma="vma-down") == 0
    assert value(found, "oma_vma_up", vma="vma-up") == 1
    assert value(found, "oma_vma_up", vma="vma-down") == 0
    seen = value(found, "oma_vma_last_seen_timestamp_seconds", vma="vma-up")
    assert abs(seen - utcnow().timestamp()) < 3600  # a real epoch time, whatever the driver
    assert value(found, "oma_nbd_exports", state="running") == 2
    assert value(found, "oma_attached_volumes", oma_vm="oma-vm-1") == 2
    assert value(found, "oma_attached_volumes", oma_vm="oma-vm-2") == 1
    assert value(found, "oma_workflows", kind="failover", status="failed") == 1

    # the numbers move with the rows: the running job advances, then completes
    with any_app.app_context(), database.connection_context():
        ReplicationJob.update(bytes_done=64 * MiB, throughput_bps=0).where(
            ReplicationJob.id == ids["running"]
        ).execute()
        ReplicationJob.update(status="completed", active_context_id=None).where(
            ReplicationJob.id == ids["running"]
        ).execute()
    after = scrape(client, viewer)
    assert value(after, "oma_replication_bytes_total", sync_type="full") == 97 * MiB
    assert value(after, "oma_replication_jobs", status="replicating") == 1
    assert value(after, "oma_replication_jobs", status="completed") == 2
    assert not any(
        k[0] == "oma_job_throughput_bytes_per_second" and ("job_id", ids["running"]) in k[1]
        for k in after
    )


def test_scrape_cost_does_not_grow_with_the_jobs(app: Any, auth: Any) -> None:
    """A constant number of statements, whatever the number of jobs (aggregates, not rows)."""
    from oma.database import database
    from oma.database.models import ReplicationJob, VmContext
    from oma.metrics import DatabaseCollector

    def statements() -> int:
        calls = []
        real = database.obj.execute_sql

        def counting(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
            calls.append(sql)
            return real(sql, params, *args, **kwargs)

        database.obj.execute_sql = counting  # type: ignore[method-assign]
        try:
            families = list(DatabaseCollector(24).collect())
        finally:
            del database.obj.execute_sql
        assert {f.name for f in families} >= {"oma_replication_jobs", "oma_replication_bytes"}
        return len(calls)

    with app.app_context(), database.connection_context():
        few = statements()
        ctx = VmContext.create(vcenter="vc", vm_id="vm-many", name="many")
        with database.atomic():
            for start in range(0, 10_000, 500):
                ReplicationJob.insert_many(
                    [
                        {
                            "id": str(uuid.uuid4()),
                            "context": ctx.id,
                            "status": "completed",
                            "effective_type": "incremental",
                            "bytes_done": 1,
                        }
                        for _ in range(start, start + 500)
                    ]
                ).execute()
        many = statements()
        total = {f.name: f for f in DatabaseCollector(24).collect()}["oma_replication_bytes"]
    assert many == few
    assert [s.value for s in total.samples if s.labels == {"sync_type": "incremental"}] == [10_000]


def test_openapi_lists_metrics_as_text(client: Any, auth: Any) -> None:
    doc = client.get("/api/v1/openapi.json", headers=auth.viewer).json
    op = doc["paths"]["/metrics"]["get"]
    assert "text/plain" in op["responses"]["200"]["content"]
    assert "security" not in op  # the document's bearer default applies


def test_workflow_steps_and_poller_ticks_are_observed(db: str) -> None:
    from oma.database.models import Workflow
    from oma.metrics import WORKER_REGISTRY
    from oma.services.poller import ProgressPoller
    from oma.workflows.engine import Definition, Step, WorkflowEngine

    def get(name: str, **labels: str) -> float:
        return WORKER_REGISTRY.get_sample_value(name, labels) or 0.0

    def boom(_ctx: Any) -> None:
        raise RuntimeError("boom")

    engine = WorkflowEngine("test-worker")
    definition = Definition(
        kind="metrics-test", steps=[Step("one", lambda _ctx: {"x": 1}), Step("two", boom)]
    )
    done = {"kind": "metrics-test", "step": "one", "outcome": "done"}
    failed = {"kind": "metrics-test", "step": "two", "outcome": "failed"}
    before = (
        get("oma_workflow_step_duration_seconds_count", **done),
        get("oma_workflow_step_duration_seconds_count", **failed),
    )
    wf = engine.create(definition)
    assert engine.run(Workflow.get_by_id(wf.id), definition) == "failed"
    assert get("oma_workflow_step_duration_seconds_count", **done) == before[0] + 1
    assert get("oma_workflow_step_duration_seconds_count", **failed) == before[1] + 1

    ticks = get("oma_poller_tick_duration_seconds_count")
    poller = ProgressPoller(token_for=lambda _vma: "t")
    try:
        poller.tick()
        poller.tick()
    finally:
        poller.close()
    assert get("oma_poller_tick_duration_seconds_count") == ticks + 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_serves_its_metrics_on_its_own_bind() -> None:
    from oma.metrics import serve_worker_metrics

    assert serve_worker_metrics(None) is None
    port = _free_port()
    server = serve_worker_metrics(("127.0.0.1", port))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as res:
            text = res.read().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"oma_poller_tick_duration_seconds", "oma_workflow_step_duration_seconds"} <= names
        with pytest.raises(ConfigError, match="OMA_METRICS_BIND"):  # the port is taken
            serve_worker_metrics(("127.0.0.1", port))
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_bind_setting() -> None:
    from oma.config import load_config

    assert load_config().metrics_bind is None
    assert load_config({"METRICS_BIND": "9101"}).metrics_bind == ("127.0.0.1", 9101)
    assert load_config({"METRICS_BIND": "0.0.0.0:9101"}).metrics_bind == ("0.0.0.0", 9101)
    with pytest.raises(ConfigError, match="OMA_METRICS_BIND"):
        load_config({"METRICS_BIND": "here"})
