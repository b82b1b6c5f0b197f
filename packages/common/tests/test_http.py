"""HttpClient: JSON, bearer token, retries on 5xx/connection errors, clear errors.

The retry and error-mapping logic is exercised through the transport seam; one test talks to a
real HTTP server on loopback.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from migration_common import HttpClient, HttpConnectionError, HttpError


def _response(status: int, body: object, url: str = "http://x/") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    resp.url = url
    return resp


class Script:
    """A transport answering from a list of outcomes and recording requests."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.requests: list[requests.PreparedRequest] = []

    def __call__(self, prepared, timeout):
        self.requests.append(prepared)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_retries_5xx_then_succeeds_with_token():
    t = Script(_response(503, {"e": 1}), _response(200, {"ok": True}))
    client = HttpClient("http://vma:8081/api/v1", token="tok", transport=t, backoff=0)
    assert client.post("/replicate", {"a": 1}) == {"ok": True}
    assert len(t.requests) == 2
    assert t.requests[0].headers["Authorization"] == "Bearer tok"
    assert t.requests[0].url == "http://vma:8081/api/v1/replicate"


def test_4xx_is_not_retried_and_names_method_url_status():
    t = Script(_response(422, {"error": {"field": "vm_id"}}))
    client = HttpClient("http://vma/api/v1", token="tok", transport=t, backoff=0)
    with pytest.raises(HttpError) as info:
        client.get("jobs/1")
    err = info.value
    assert (err.status, err.method, err.url) == (422, "GET", "http://vma/api/v1/jobs/1")
    assert "vm_id" in str(err) and "tok" not in str(err)
    assert len(t.requests) == 1


def test_connection_errors_are_retried_then_raised():
    t = Script(*(requests.ConnectionError("refused") for _ in range(3)))
    client = HttpClient("http://vma/api/v1", transport=t, retries=2, backoff=0)
    with pytest.raises(HttpConnectionError, match="connection failed"):
        client.get("health")
    assert len(t.requests) == 3


def test_real_server_round_trip():
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["auth"] = self.headers["Authorization"]
            payload = json.dumps({"echo": seen["body"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with HttpClient(f"http://127.0.0.1:{server.server_port}", token="abc") as client:
            assert client.post("/x", {"n": 1}) == {"echo": {"n": 1}}
        assert seen["auth"] == "Bearer abc"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_refused_port_is_a_connection_error():
    client = HttpClient("http://127.0.0.1:9", retries=0, timeout=1)
    with pytest.raises(HttpConnectionError):
        client.get("/health")
    client.close()
