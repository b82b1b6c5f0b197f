"""HTTP front end: ``/client/api`` (GET query or POST form) and the ``/sim/*`` admin endpoints.

Admin endpoints are unsigned and answer only loopback clients:

* ``GET /sim/health`` → ``{"ok": true}``
* ``GET /sim/fixture`` → the fixture ids (no secrets)
* ``GET /sim/faults`` → active fault rules
* ``POST /sim/faults`` JSON ``{"command": "attachVolume", "errorcode": 530, "once": true,
  "errortext": "…", "delay": 0.5, "count": 2}`` → 201 with the rule; 400 names a bad field
* ``DELETE /sim/faults`` → removes every rule
* ``GET /sim/settings`` → ``{"settings": {name: value}}`` (global settings, see ``settings.py``)
* ``PUT /sim/settings`` JSON ``{"allow.user.expunge.recover.vm": true, …}`` → 200 with every
  setting; 400 names the first bad field and changes nothing
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .api import Api
from .faults import from_json

log = logging.getLogger("cloudstack_sim")
JSON_TYPE = "application/json; charset=UTF-8"
MAX_BODY = 1 << 20


class Handler(BaseHTTPRequestHandler):
    """One HTTP request."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's per-request line (we log commands ourselves)."""

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _first(pairs: list[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in pairs:
            out.setdefault(k, v)  # like the servlet API: a name's first value counts
        return out

    def _api(self, body: bytes = b"") -> None:
        url = urlsplit(self.path)
        pairs = parse_qsl(url.query, keep_blank_values=True)
        ctype = self.headers.get("Content-Type", "")
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        params = self._first(pairs)
        status, answer = self.server.api.handle(params)
        log.info("command=%s status=%s", params.get("command", "?"), status)
        self._send(status, answer)

    def _loopback(self) -> bool:
        return ipaddress.ip_address(self.client_address[0]).is_loopback

    def do_GET(self) -> None:
        """GET /client/api or an admin endpoint."""
        path = urlsplit(self.path).path
        if path == "/client/api":
            return self._api()
        if not path.startswith("/sim/") or not self._loopback():
            return self._send(404, {"error": {"code": "not_found", "message": path}})
        if path == "/sim/health":
            return self._send(200, {"ok": True})
        if path == "/sim/fixture":
            return self._send(200, self.server.api.store.fixture())
        if path == "/sim/faults":
            return self._send(200, {"faults": self.server.api.faults.list()})
        if path == "/sim/settings":
            store = self.server.api.store
            with store.lock:
                return self._send(200, {"settings": store.settings()})
        return self._send(404, {"error": {"code": "not_found", "message": path}})

    def do_POST(self) -> None:
        """POST /client/api (form) or POST /sim/faults (JSON)."""
        path = urlsplit(self.path).path
        try:
            body = self._body()
        except ValueError:
            return self._send(413, {"error": {"code": "too_large", "message": "body too large"}})
        if path == "/client/api":
            return self._api(body)
        if path != "/sim/faults" or not self._loopback():
            return self._send(404, {"error": {"code": "not_found", "message": path}})
        try:
            fault = from_json(json.loads(body or b"null"))
        except json.JSONDecodeError:
            return self._send(
                400,
                {"error": {"code": "bad_json", "field": "body", "message": "body: invalid JSON"}},
            )
        except ValueError as exc:
            field = str(exc).split(":", 1)[0]
            return self._send(
                400, {"error": {"code": "invalid", "field": field, "message": str(exc)}}
            )
        self.server.api.faults.add(fault)
        log.info("fault added %s", fault.to_dict())
        return self._send(201, fault.to_dict())

    def do_PUT(self) -> None:
        """PUT /sim/settings (JSON object of setting name → value)."""
        if urlsplit(self.path).path != "/sim/settings" or not self._loopback():
            return self._send(404, {"error": {"code": "not_found", "message": self.path}})
        try:
            data = json.loads(self._body() or b"null")
        except (ValueError, json.JSONDecodeError):
            return self._send(
                400,
                {"error": {"code": "bad_json", "field": "body", "message": "body: invalid JSON"}},
            )
        if not isinstance(data, dict):
            return self._send(
                400,
                {
                    "error": {
                        "code": "invalid",
                        "field": "body",
                        "message": "body: JSON object expected",
                    }
                },
            )
        store = self.server.api.store
        try:
            with store.lock:
                current = store.update_settings(data)
        except ValueError as exc:
            field = str(exc).split(":", 1)[0]
            return self._send(
                400, {"error": {"code": "invalid", "field": field, "message": str(exc)}}
            )
        log.info("settings changed %s", data)
        return self._send(200, {"settings": current})

    def do_DELETE(self) -> None:
        """DELETE /sim/faults clears every rule."""
        if urlsplit(self.path).path != "/sim/faults" or not self._loopback():
            return self._send(404, {"error": {"code": "not_found", "message": self.path}})
        self.server.api.faults.clear()
        return self._send(200, {"faults": []})


class SimServer(ThreadingHTTPServer):
    """The HTTP server plus a timer that finishes due async jobs in the background."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: Api, tick: float = 0.05) -> None:
        super().__init__(address, Handler)
        self.api = api
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, args=(tick,), daemon=True)
        self._ticker.start()

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.api.jobs.settle()
            except Exception:  # keep ticking; a broken job must not stop the simulator
                log.exception("settling jobs failed")

    def server_close(self) -> None:
        """Stop the job timer, then close the socket."""
        self._stop.set()
        self._ticker.join(2)
        super().server_close()
