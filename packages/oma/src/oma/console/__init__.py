"""The OMA's web console: server-rendered pages at ``/`` on the API's port.

Jinja templates plus one vendored JavaScript library (htmx, see ``static/VENDOR.json`` and
``scripts/vendor-htmx``) for the live fragments; no Node toolchain at run time. Signing in
takes an API token (:mod:`.session`); every read and every action goes through the JSON API's
own handlers (:mod:`.api_calls`), so the console enforces exactly the API's roles and rules and
shows the API's error text when it refuses.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from ..api.errors import ApiError, from_oma_error
from ..config import OmaConfig
from ..errors import OmaError
from . import formatting, session
from .blueprint import bp

PUBLIC_ENDPOINTS = {"console.sign_in", "console.static"}
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@bp.before_request
def _authenticate() -> Any:
    if request.endpoint == "console.static":
        return None
    session.check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if session.current_token() is None:
        target = url_for("console.sign_in", next=request.full_path.rstrip("?"))
        if request.headers.get("HX-Request"):
            return Response("", 401, {"HX-Redirect": target})
        return redirect(target)
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "console.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.errorhandler(ApiError)
def _api_error(err: ApiError) -> tuple[str, int]:
    return render_template("error.html", message=err.message, status=err.status), err.status


@bp.errorhandler(OmaError)
def _oma_error(exc: OmaError) -> tuple[str, int]:
    return _api_error(from_oma_error(exc))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    return render_template("error.html", message=exc.description, status=status), status


def init_console(app: Flask, config: OmaConfig) -> None:
    """Register the console on the API app: session cookie, template helpers, routes."""
    from . import actions, admin, pages, signin  # noqa: F401 - they add their routes to bp

    session.init_sessions(app, config.secret_key, config.data_dir)
    formatting.register(app)

    @app.context_processor
    def _console_globals() -> dict[str, Any]:
        return {
            "csrf_token": session.csrf_token,
            "can": session.can,
            "current_token": getattr(g, "token", None),
            "poll_seconds": max(config.poll_interval, 0.5),
        }

    app.register_blueprint(bp)


__all__ = ["init_console"]
