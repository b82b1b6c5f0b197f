"""JSON errors for every failure: ``{"error": {"code", "message", "field"}}``.

Routes raise :class:`ApiError` (or let an :class:`oma.errors.OmaError` through: it is mapped
here, in one place, to a status and code). werkzeug's HTTP errors (404, 405 …) and anything
unexpected (500, logged with its traceback, never shown) get the same shape.
"""

from __future__ import annotations

from typing import Any

import peewee
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from migration_common import ConfigError, get_logger

from ..errors import (
    CloudStackError,
    CloudStackUnreachable,
    ConflictError,
    InvalidStateError,
    NotFoundError,
    OmaError,
    SecretsError,
    VmaClientError,
)

log = get_logger(__name__)


class ApiError(Exception):
    """An error answer: machine ``code``, human ``message``, HTTP ``status``, bad ``field``."""

    def __init__(
        self, code: str, message: str, status: int = 400, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


def invalid(field: str, message: str) -> ApiError:
    """A 400 ``invalid`` error naming ``field``."""
    return ApiError("invalid", f"{field}: {message}", 400, field)


def error_response(err: ApiError) -> tuple[Response, int]:
    """Flask response for ``err``."""
    return jsonify(err.to_dict()), err.status


def from_oma_error(exc: OmaError) -> ApiError:
    """Map an OMA error to an API error (the one place that decides statuses)."""
    if isinstance(exc, NotFoundError):
        return ApiError("not_found", str(exc), 404)
    if isinstance(exc, ConflictError):
        return ApiError("conflict", str(exc), 409, exc.field)
    if isinstance(exc, InvalidStateError):
        return ApiError("invalid_state", str(exc), 409)
    if isinstance(exc, SecretsError):
        return ApiError("secrets_unreadable", str(exc), 500)
    if isinstance(exc, CloudStackUnreachable):
        return ApiError("cloudstack_unreachable", str(exc), 502)
    if isinstance(exc, CloudStackError):
        return ApiError("cloudstack_error", str(exc), 502)
    if isinstance(exc, VmaClientError):
        status = getattr(exc, "status", None)
        code = "vma_unreachable" if status is None else "vma_error"
        return ApiError(code, str(exc), 502)
    return ApiError("oma_error", str(exc), 500)


def register_error_handlers(app: Flask) -> None:
    """Install the JSON handlers for ApiError, OmaError, HTTP errors and the last resort."""

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> tuple[Response, int]:
        return error_response(err)

    @app.errorhandler(OmaError)
    def _oma_error(exc: OmaError) -> tuple[Response, int]:
        err = from_oma_error(exc)
        if err.status >= 500:
            log.warning("request failed", code=err.code, error=str(exc))
        return error_response(err)

    @app.errorhandler(ConfigError)
    def _config_error(exc: ConfigError) -> tuple[Response, int]:
        return error_response(ApiError("config_error", str(exc), 500))

    @app.errorhandler(peewee.IntegrityError)
    def _integrity(exc: peewee.IntegrityError) -> tuple[Response, int]:
        # the repositories turn the expected ones into ConflictError; a race that slips
        # through is still a conflict with the current state, never a server fault
        log.warning("database constraint refused a write", error=str(exc)[:200])
        return error_response(
            ApiError("conflict", "the change conflicts with the current state; retry", 409)
        )

    @app.errorhandler(peewee.DatabaseError)
    def _database(exc: peewee.DatabaseError) -> tuple[Response, int]:
        # read-only, full, locked or gone: the request may be retried when it is back
        log.error("database error", error=type(exc).__name__, detail=str(exc)[:200])
        return error_response(
            ApiError(
                "database_unavailable",
                f"the OMA database cannot serve this request ({type(exc).__name__}: "
                f"{str(exc)[:120]}); retry later",
                503,
            )
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = {
            400: "bad_request",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            409: "conflict",
            413: "too_large",
            415: "unsupported_media_type",
        }.get(status, "http_error")
        response, status = error_response(ApiError(code, exc.description or exc.name, status))
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        if isinstance(exc, HTTPException):  # pragma: no cover - handled above
            return _http_error(exc)
        log.error("unhandled error", error=type(exc).__name__, exc_info=exc)
        return error_response(ApiError("internal", "internal server error; see the OMA log", 500))
