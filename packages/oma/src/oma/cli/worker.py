"""``oma worker``: the progress poller and workflow runner (APScheduler), until SIGTERM."""

from __future__ import annotations

import click


@click.command("worker")
@click.option("--worker-id", help="Name of this worker (default OMA_WORKER_ID, hostname-pid).")
def command(worker_id: str | None) -> None:
    """Run the OMA worker: claims jobs, provisions replicas, polls progress."""
    from ._server import load

    config = load(WORKER_ID=worker_id)
    from ..metrics import serve_worker_metrics
    from ..services.worker import run_worker

    serve_worker_metrics(config.metrics_bind)  # OMA_METRICS_BIND (off when empty)
    run_worker(config)
