"""docs/grafana-dashboard.json: a dashboard Grafana can import, whose every PromQL expression
uses only metrics the OMA (API and worker) and the VMA really export, and which shows each
exported family at least once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
METRIC = re.compile(r"\b((?:oma|vma)_[a-zA-Z0-9_:]+)")


def exported(text: str) -> dict[str, set[str]]:
    """{family name: the sample names it can expose} of a Prometheus exposition."""
    return {
        f.name: {f.name + s for s in SUFFIXES.get(f.type, ("",))}
        for f in text_string_to_metric_families(text)
    }


def oma_api_exposition(tmp_path: Path) -> str:
    from cryptography.fernet import Fernet

    from oma.api import create_app
    from oma.database import database
    from oma.database.repos import tokens

    app = create_app(
        {
            "DATA_DIR": str(tmp_path / "oma"),
            "SECRET_KEY": Fernet.generate_key().decode(),
            "TESTING": True,
        }
    )
    with app.app_context(), database.connection_context():
        _, plain = tokens.create_token("grafana", "viewer")
    res = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {plain}"})
    database.obj.close()
    assert res.status_code == 200
    return res.get_data(as_text=True)


def vma_exposition(tmp_path: Path) -> str:
    from vma_api_server import create_app

    token = "grafana-test-token-0123456789"
    app = create_app({"API_TOKEN": token, "DATA_DIR": str(tmp_path / "vma")}, start_runner=False)
    res = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 200
    return res.get_data(as_text=True)


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every target expression of every panel (rows' nested panels included)."""
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            out += [t["expr"] for t in inner.get("targets", [])]
    return out


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        for target in panel.get("targets", []):
            assert target["refId"] and target["expr"], panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]


def test_dashboard_uses_only_exported_metrics(tmp_path: Path) -> None:
    from oma.metrics import API_METRICS, WORKER_METRICS, WORKER_REGISTRY
    from vma_api_server.metrics import METRICS as VMA_METRICS

    families = {
        **exported(oma_api_exposition(tmp_path)),
        **exported(generate_latest(WORKER_REGISTRY).decode()),
        **exported(vma_exposition(tmp_path)),
    }
    # the servers expose what their modules declare
    assert set(API_METRICS) | set(WORKER_METRICS) | set(VMA_METRICS) <= set(families)
    samples = set().union(*families.values())

    used = {
        name
        for expr in expressions(json.loads(DASHBOARD.read_text()))
        for name in METRIC.findall(expr)
    }
    assert used, "no metric found in the dashboard's expressions"
    assert not used - samples, (
        f"the dashboard uses metrics nobody exports: {sorted(used - samples)}"
    )
    shown = {f for f, names in families.items() if names & used}
    declared = set(API_METRICS) | set(WORKER_METRICS) | set(VMA_METRICS)
    assert declared <= shown, f"exported but not on the dashboard: {sorted(declared - shown)}"
