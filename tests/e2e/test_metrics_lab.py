"""Prometheus metrics of a live lab: ``/metrics`` of the OMA (gunicorn, a viewer token), of the
VMA (its API token) and of the OMA worker (``OMA_METRICS_BIND``), scraped before and after a
full and an incremental replication — the exposition parses, and the numbers move as the
database and the data path say they should."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from labtest.procs import free_port

from .conftest import E2eLab, MiB, make_lab

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str | None = None, ca: Path | None = None) -> Samples:
    """GET ``url`` and parse it as Prometheus' text format (https verified with ``ca``)."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca)) if url.startswith("https") else None
    with urllib.request.urlopen(req, timeout=30, context=context) as res:
        assert res.headers["Content-Type"].startswith("text/plain"), res.headers
        text = res.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in found.items() if n == name and want <= set(lab))


@pytest.fixture
def metrics_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[E2eLab, str]]:
    """The lab, its OMA worker serving its own metrics on a free loopback port."""
    port = free_port()
    monkeypatch.setenv("OMA_METRICS_BIND", f"127.0.0.1:{port}")  # inherited by oma worker
    # the lab's VMA is not enrolled (no client certificate): plaintext NBD, as the metrics
    # do not depend on the transport
    monkeypatch.setenv("OMA_NBD_ALLOW_PLAINTEXT", "true")
    with make_lab(tmp_path) as lab:
        yield lab, f"http://127.0.0.1:{port}/metrics"


def viewer_token(lab: E2eLab) -> str:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "oma",
            "token",
            "create",
            "--name",
            "prometheus",
            "--role",
            "viewer",
        ],
        env=lab.oma.config_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout.strip().splitlines()[-1].strip()


def test_metrics_move_with_a_replication(metrics_lab: tuple[E2eLab, str]) -> None:
    lab, worker_url = metrics_lab
    token = viewer_token(lab)
    oma_url, ca = f"{lab.oma.url}/metrics", lab.oma.ca_file  # the VMA's certificate too, enrolled
    with pytest.raises(urllib.error.HTTPError) as denied:
        scrape(oma_url, ca=ca)
    assert denied.value.code == 401
    denied.value.close()

    lab.register()
    vma_url = f"{lab.vma.url}/metrics"  # https once enrolled
    oma0, vma0 = scrape(oma_url, token, ca), scrape(vma_url, lab.vma.token, ca)
    worker0 = scrape(worker_url)
    assert value(oma0, "oma_replication_jobs", status="completed") == 0
    assert value(oma0, "oma_replication_bytes_total", sync_type="full") == 0
    assert value(vma0, "vma_jobs", status="completed") == 0
    assert value(vma0, "vma_vcenter_configured") == 1

    full = lab.wait_job(lab.replicate("full"))
    assert full["status"] == "completed", full.get("error_message") or full
    oma1, vma1 = scrape(oma_url, token, ca), scrape(vma_url, lab.vma.token, ca)
    worker1 = scrape(worker_url)
    assert full["bytes_done"] > 0
    assert value(oma1, "oma_replication_jobs", status="completed") == 1
    assert value(oma1, "oma_replication_jobs", status="replicating") == 0
    assert value(oma1, "oma_replication_bytes_total", sync_type="full") == full["bytes_done"]
    assert value(vma1, "vma_jobs", status="completed") == 1
    assert value(vma1, "vma_replication_bytes_total", sync_type="full") == full["bytes_done"]
    assert value(oma1, "oma_vma_up", vma="vma-e2e") == 1  # the poller reached it
    assert value(oma1, "oma_nbd_exports", state="running") == len(lab.vm["disks"])
    assert value(oma1, "oma_attached_volumes", oma_vm=lab.sim.oma_vm_id) == len(lab.vm["disks"])
    assert value(oma1, "oma_attach_budget_volumes") == 24
    # the worker observed its poller ticks and the replication workflow's steps
    ticks = "oma_poller_tick_duration_seconds_count"
    assert value(worker1, ticks) > value(worker0, ticks)
    steps = "oma_workflow_step_duration_seconds_count"
    assert total(worker1, steps, kind="replication", outcome="done") > total(
        worker0, steps, kind="replication"
    )

    lab.write(0, 7 * MiB, MiB, seed=1)  # the guest writes 1 MiB: the incremental moves it
    incr = lab.wait_job(lab.replicate("incremental"))
    assert incr["status"] == "completed", incr
    oma2, vma2 = scrape(oma_url, token, ca), scrape(vma_url, lab.vma.token, ca)
    assert value(oma2, "oma_replication_jobs", status="completed") == 2
    assert value(oma2, "oma_replication_bytes_total", sync_type="incremental") == MiB
    assert value(oma2, "oma_replication_bytes_total", sync_type="full") == full["bytes_done"]
    assert value(vma2, "vma_replication_bytes_total", sync_type="incremental") == MiB
    assert value(oma2, "oma_replication_failures_total", error_class="vma_unreachable") == 0
