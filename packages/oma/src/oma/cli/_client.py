"""The operator commands' API client: OMA_URL + OMA_TOKEN, errors as one CLI line."""

from __future__ import annotations

import json
from typing import Any

from ._errors import CliError, ExitCode


class ApiClient:
    """Calls the OMA API (``/api/v1``) with the configured token."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        from migration_common import HttpClient, register_secret

        from ..config import load_client_config

        config = load_client_config({"URL": url, "TOKEN": token})
        if not config.token:
            raise CliError(
                "no API token given",
                hint="set OMA_TOKEN (create one with `oma token create --name me --role operator`)",
                code=ExitCode.UNAUTHORIZED,
            )
        register_secret(config.token)
        self.url = config.url
        self._http = HttpClient(
            f"{config.url}/api/v1",
            token=config.token,
            timeout=(5.0, 30.0),
            retries=1,
            backoff=0.3,
            verify=config.verify,
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **params: Any) -> Any:
        """GET and decode, dropping None parameters."""
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST JSON (never retried: the API may have acted)."""
        return self._call("POST", path, json=body or {}, retries=0)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        """PATCH JSON (never retried)."""
        return self._call("PATCH", path, json=body, retries=0)

    def delete(self, path: str) -> Any:
        """DELETE (never retried)."""
        return self._call("DELETE", path, retries=0)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        from migration_common import HttpConnectionError, HttpError

        try:
            return self._http.request(method, path, **kw)
        except HttpConnectionError as exc:
            if "TLS certificate" in str(exc):
                raise CliError(
                    f"the OMA API's certificate at {self.url} did not verify: {exc}",
                    hint="set OMA_CA_FILE to the OMA's CA certificate (<data dir>/pki/ca.crt "
                    "on the OMA)",
                    code=ExitCode.UNREACHABLE,
                ) from None
            raise CliError(
                f"cannot reach the OMA API at {self.url}",
                hint="start it with `oma serve`, or set OMA_URL to where it runs",
                code=ExitCode.UNREACHABLE,
            ) from None
        except HttpError as exc:
            raise _api_error(exc) from None


def _api_error(exc: Any) -> CliError:
    message, field = exc.body[:200] or "no details", None
    try:
        err = json.loads(exc.body)["error"]
        message, field = err.get("message") or message, err.get("field")
    except (ValueError, KeyError, TypeError):
        pass
    status = exc.status or 0
    if status == 401:
        return CliError(
            f"the OMA refused the token: {message}",
            hint="set OMA_TOKEN to a valid token (`oma token create`)",
            code=ExitCode.UNAUTHORIZED,
        )
    if status == 403:
        return CliError(
            message, hint="use a token with a stronger role", code=ExitCode.UNAUTHORIZED
        )
    if status == 404:
        return CliError(
            message, hint="check the id or name (`oma vms`, `oma jobs`)", code=ExitCode.NOT_FOUND
        )
    if status == 409:
        return CliError(
            message,
            hint="wait for the active job (`oma jobs --active`) or stop it",
            code=ExitCode.CONFLICT,
        )
    if 400 <= status < 500:
        where = f" (field {field})" if field else ""
        return CliError(f"{message}{where}", code=ExitCode.REJECTED)
    return CliError(
        f"the OMA API failed: HTTP {status}: {message}",
        hint="see the OMA API log",
        code=ExitCode.ERROR,
    )
