"""A small JSON HTTP client over requests: timeouts, bounded retries, bearer token.

Retries (with exponential backoff) happen on connection errors, timeouts and 5xx answers,
``retries`` times at most; a 4xx answer is never retried. Every failure raises
:class:`HttpError` (or :class:`HttpConnectionError` when no answer came) carrying the method,
the URL (never the token), the status and an excerpt of the body.

The ``transport`` seam takes a callable ``send(prepared_request, timeout) -> requests.Response``;
tests plug in an in-memory handler instead of opening sockets.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from ._errors import HttpConnectionError, HttpError

Transport = Callable[[requests.PreparedRequest, tuple[float, float]], requests.Response]


class HttpClient:
    """JSON-over-HTTP client bound to one base URL (e.g. ``http://vma:8081/api/v1``)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        retries: int = 3,
        backoff: float = 0.5,
        transport: Transport | None = None,
        verify: bool | str = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self.retries = max(0, retries)
        self.backoff = backoff
        self._token = token
        self._transport = transport
        self._session = requests.Session()
        self._session.verify = verify

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (relative to the base URL)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def get(self, path: str, *, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        """GET ``path`` and return the decoded JSON body (None when empty)."""
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        """POST ``json`` to ``path`` and return the decoded JSON body (None when empty)."""
        return self.request("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        """PUT ``json`` to ``path`` and return the decoded JSON body."""
        return self.request("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        """DELETE ``path`` and return the decoded JSON body."""
        return self.request("DELETE", path, **kw)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retries: int | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """Send one request with retries; return decoded JSON or raise HttpError."""
        response = self.send(
            method, path, params=params, json=json, retries=retries, timeout=timeout
        )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise HttpError(
                "response is not JSON",
                method=method,
                url=response.url,
                status=response.status_code,
                body=response.text,
            ) from None

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retries: int | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> requests.Response:
        """Send one request with retries; return the 2xx/3xx response or raise HttpError."""
        url = self.url(path)
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = requests.Request(method, url, params=params, json=json, headers=headers)
        prepared = self._session.prepare_request(req)
        attempts = 1 + (self.retries if retries is None else max(0, retries))
        limit = (
            self.timeout
            if timeout is None
            else (timeout if isinstance(timeout, tuple) else (timeout, timeout))
        )
        last: HttpError | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                response = self._send(prepared, limit)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = HttpConnectionError(_describe(exc), method=method, url=url)
                last.__cause__ = exc
                continue
            if response.status_code >= 500:
                last = HttpError(
                    "server error",
                    method=method,
                    url=url,
                    status=response.status_code,
                    body=response.text,
                )
                continue
            if response.status_code >= 400:
                raise HttpError(
                    "request rejected",
                    method=method,
                    url=url,
                    status=response.status_code,
                    body=response.text,
                )
            return response
        assert last is not None
        raise last

    def _send(
        self, prepared: requests.PreparedRequest, timeout: tuple[float, float]
    ) -> requests.Response:
        if self._transport is not None:
            return self._transport(prepared, timeout)
        return self._session.send(prepared, timeout=timeout)


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS certificate verification failed ({_ssl_reason(exc)})"
    return "connection failed"


def _ssl_reason(exc: Exception) -> str:
    """The innermost ssl error's reason (``certificate verify failed: …``), without the URL."""
    text = str(exc)
    for marker in ("certificate verify failed", "hostname mismatch", "wrong version number"):
        at = text.find(marker)
        if at >= 0:
            return text[at:].split("(_ssl")[0].rstrip(" )'\"")
    return "TLS handshake failed"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): a bind only this host
    can reach. ``0.0.0.0``, ``::`` and every other name or address are not."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
