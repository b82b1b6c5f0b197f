"""``GET /metrics``: the OMA's state in Prometheus' text format (bearer token, viewer role).

The numbers come from the database at scrape time (:class:`oma.metrics.DatabaseCollector`),
so every gunicorn worker answers the same. The worker's own histograms (poller ticks,
workflow steps) are served by ``oma worker`` on ``OMA_METRICS_BIND`` instead.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..metrics import api_registry
from ._context import config

bp = Blueprint("metrics", __name__)


def _registry() -> CollectorRegistry:
    """This app's registry (built once per app)."""
    registry = current_app.extensions.get("oma_metrics")
    if registry is None:
        registry = current_app.extensions["oma_metrics"] = api_registry(config().attach_budget)
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    """Jobs, bytes moved, throughput, VMAs, exports and attached volumes for Prometheus."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))  # text 0.0.4 or
    return Response(encode(_registry()), content_type=content_type)  # OpenMetrics, if asked


metrics.media_type = "text/plain"  # type: ignore[attr-defined]  # for the OpenAPI document
