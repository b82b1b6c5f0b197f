"""Bad input never reaches a 500: each class found by probing the API answers a 4xx (or a 503
when the database refuses work) in the JSON error shape, naming the field."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

import pytest


def _error(res: Any) -> dict[str, Any]:
    assert res.is_json, res.data[:200]
    return res.get_json()["error"]


def test_deeply_nested_body_is_a_400(client, auth):
    body = '{"name": ' + "[" * 50_000 + "]" * 50_000 + "}"
    res = client.post(
        "/api/v1/groups", data=body, headers=auth.admin, content_type="application/json"
    )
    assert res.status_code == 400
    error = _error(res)
    assert error["code"] == "invalid_json" and "nests deeper than 32 levels" in error["message"]


def test_lone_surrogate_names_the_field(client, auth):
    res = client.post(
        "/api/v1/groups",
        data='{"name": "web\\ud800"}',
        headers=auth.admin,
        content_type="application/json",
    )
    assert res.status_code == 400
    error = _error(res)
    assert error["field"] == "name" and "lone UTF-16 surrogate" in error["message"]


def test_control_characters_in_ids_never_pass(client, auth):
    res = client.post(
        "/api/v1/replications",
        data=json.dumps({"vm_id": "vm-\u0001", "vma_id": "x"}),
        headers=auth.admin,
        content_type="application/json",
    )
    assert res.status_code == 400 and _error(res)["field"] == "vm_id"
    res = client.get("/api/v1/vm-contexts/ab%01cd", headers=auth.admin)
    assert res.status_code == 400
    assert _error(res)["field"] == "path" and "control character (U+0001)" in _error(res)["message"]
    res = client.get("/api/v1/vm-contexts?name=a%1bb", headers=auth.admin)
    assert res.status_code == 400 and _error(res)["field"] == "name"


@pytest.mark.parametrize("value", ["99999999999999999999999", str(2**63)])
def test_huge_offset_is_a_400(client, auth, value):
    for path in ("vm-contexts", "replications", "workflows", "schedules/runs"):
        res = client.get(f"/api/v1/{path}?offset={value}", headers=auth.admin)
        assert res.status_code == 400, path
        assert _error(res)["field"] == "offset"


def test_read_only_database_is_a_503_and_health_says_so(postgres_url, config_overrides):
    """A PostgreSQL database switched to read-only: writes answer 503 naming the cause, and
    /health reports the database as not writable (it said ok before)."""
    import psycopg2

    from oma.api import create_app, health
    from oma.database import database

    app = create_app({**config_overrides, "TESTING": True, "DATABASE_URL": postgres_url})
    from oma.database.repos import tokens

    with app.app_context(), database.connection_context():
        _, plain = tokens.create_token("ro-admin", "admin")
    headers = {"Authorization": f"Bearer {plain}"}
    client = app.test_client()
    health._probe["at"] = -health.PROBE_EVERY
    assert client.get("/health").get_json()["database"] == {"ok": True, "writable": True}
    name = postgres_url.rsplit("/", 1)[1]
    admin = psycopg2.connect(postgres_url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        database.obj.close_all()  # new connections see the setting
        res = client.post("/api/v1/groups", json={"name": "g1"}, headers=headers)
        assert res.status_code == 503
        error = _error(res)
        assert error["code"] == "database_unavailable" and "read-only" in error["message"]
        health._probe["at"] = -health.PROBE_EVERY
        res = client.get("/health")
        assert res.status_code == 503
        assert res.get_json()["database"]["writable"] is False
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
        admin.close()
        database.obj.close_all()
        health._probe["at"] = -health.PROBE_EVERY


def _raw_get(
    url: str, path: str, headers: dict[str, str], cafile: Any = None
) -> tuple[int, str, bytes]:
    host, port = url.removeprefix("http://").removeprefix("https://").split(":")
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=str(cafile))
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, int(port), timeout=30, context=context
        )
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        res = conn.getresponse()
        return res.status, res.getheader("Content-Type") or "", res.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_gunicorn_refusals_are_json(tmp_path):
    """Requests gunicorn refuses itself (a request line over its limit, too many header
    fields) answer in the API's JSON error shape, not gunicorn's HTML page."""
    from labtest.oma import oma_services

    with oma_services(tmp_path) as oma:
        ca = oma.data_dir / "pki" / "ca.crt"
        status, kind, body = _raw_get(oma.url, "/api/v1/vm-contexts?name=" + "a" * 9000, {}, ca)
        assert (status, kind) == (414, "application/json")
        assert json.loads(body)["error"]["code"] == "uri_too_long"
        many = {f"X-Probe-{i}": "1" for i in range(120)}
        status, kind, body = _raw_get(oma.url, "/api/v1/health", many, ca)
        assert (status, kind) == (431, "application/json")
        assert json.loads(body)["error"]["code"] == "headers_too_large"
