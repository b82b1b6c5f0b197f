"""A thin client of the OMA's public HTTP API (``/api/v1``), the only way the demo drives it."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class DemoError(Exception):
    """A step of the demo failed; the message is the one-line reason printed at exit."""


class OmaApi:
    """JSON requests with a bearer token; non-2xx answers raise :class:`DemoError`."""

    def __init__(
        self, url: str, token: str, timeout: float = 60.0, ca_file: Path | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        # an https OMA is verified with its CA (``ca_file``), never without verification
        self._context = (
            ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if self.url.startswith("https://")
            else None
        )

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; returns (status, decoded body) without raising on HTTP errors."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v1/{path.lstrip('/')}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context) as res:
                raw = res.read()
                return res.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            try:
                return exc.code, json.loads(raw) if raw else None
            except ValueError:
                return exc.code, raw.decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise DemoError(f"OMA API unreachable at {self.url}: {exc}") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Request and return the body; raise :class:`DemoError` naming the API's error."""
        status, data = self.request(method, path, body)
        if 200 <= status < 300:
            return data
        raise DemoError(f"{method} /api/v1/{path} → {status}: {error_text(data)}")

    def get(self, path: str) -> Any:
        """GET ``path``."""
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        """POST ``path`` with a JSON body."""
        return self.call("POST", path, body if body is not None else {})


def error_text(data: Any) -> str:
    """The message of a JSON error body (``{"error": {"code", "message", "field"}}``)."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        text = f"{err.get('code')}: {err.get('message')}"
        return text + (f" (field {err['field']})" if err.get("field") else "")
    return str(data)[:300]
