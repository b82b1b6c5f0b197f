"""The console's one way to read and change anything: the JSON API's own handlers, in-process.

:func:`call` runs the API view that serves ``method /api/v1/<path>`` inside a nested request
context, with the signed-in token as ``g.token``/``g.role``. The handler's validation, role
checks (the method rule of :func:`oma.api.auth.authenticate` and ``admin_only``), business
rules and error mapping are the API's; the console only renders the answer — on a refusal the
API's own error text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, g

from ..api.auth import READ_METHODS, require
from ..api.errors import ApiError
from ..database.db import database
from ..database.models import Role


@dataclass(frozen=True)
class Answer:
    """An API answer: HTTP status and decoded JSON body (None for an empty body)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        """The API's error message (empty for a success)."""
        if self.ok:
            return ""
        err = (self.body or {}).get("error") or {}
        return str(err.get("message") or f"HTTP {self.status}")


def call(method: str, path: str, json: Any = None, query: dict[str, Any] | None = None) -> Answer:
    """Run the API handler of ``method /api/v1/<path>`` as the signed-in token."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    token, role = g.token, g.role
    kwargs: dict[str, Any] = {"method": method, "query_string": query or {}}
    if json is not None:
        kwargs["json"] = json
    ctx = app.test_request_context(f"/api/v1/{path.lstrip('/')}", **kwargs)
    ctx.push()
    try:
        g.token, g.role = token, role
        try:
            require(Role.VIEWER if method in READ_METHODS else Role.OPERATOR)
            if ctx.request.routing_exception is not None:
                raise ctx.request.routing_exception
            rule = ctx.request.url_rule
            rv = app.view_functions[rule.endpoint](**(ctx.request.view_args or {}))
        except Exception as exc:  # the API's own error handlers answer it
            rv = app.handle_user_exception(exc)
        response = app.make_response(rv)
        body = response.get_json(silent=True) if response.data else None
        return Answer(response.status_code, body)
    finally:
        ctx.pop()
        # the nested context's teardown returned the request's connection to the pool
        database.connect(reuse_if_open=True)


def get(path: str, **query: Any) -> Any:
    """The body of a GET that must succeed (an error is raised as the API's ApiError)."""
    answer = call("GET", path, query={k: v for k, v in query.items() if v not in (None, "")})
    if not answer.ok:
        err = (answer.body or {}).get("error") or {}
        raise ApiError(err.get("code") or "error", answer.error, answer.status, err.get("field"))
    return answer.body
