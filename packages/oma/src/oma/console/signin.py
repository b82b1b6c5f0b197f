"""Sign-in and sign-out pages."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from . import session
from .blueprint import bp


def _local(target: str | None) -> str:
    """``next`` when it is a path on this console, else the overview."""
    return session.local_path(target) or url_for("console.overview")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    """The form with the "API token" field; a token of any role signs in."""
    error = None
    if request.method == "POST":
        if session.sign_in(request.form.get("token", "")) is not None:
            return redirect(_local(request.form.get("next")))
        error = "invalid or revoked token"
    status = 401 if error else 200
    return render_template("sign_in.html", error=error, next=request.values.get("next", "")), status


@bp.post("/sign-out")
def sign_out() -> Response:
    """End the session."""
    session.sign_out()
    return redirect(url_for("console.sign_in"))
