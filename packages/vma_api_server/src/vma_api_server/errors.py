"""JSON errors for every failure: ``{"error": {"code", "message", "field"}}``.

Routes raise :class:`ApiError` (or let a VMA error through); the handlers registered by
:func:`register_error_handlers` translate VMA errors, pydantic validation errors, werkzeug
HTTP errors and anything unexpected into the JSON shape, never an HTML page or a traceback.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from migration_common import ContractError, get_logger
from vma.errors import (
    JobConflictError,
    JobError,
    JobNotFoundError,
    JobRequestError,
    SourceError,
    VcenterNotConfiguredError,
    VmaError,
    VmNotFoundError,
    VmwareConnectionError,
    VmwareError,
)

log = get_logger(__name__)


class ApiError(Exception):
    """An error answer: machine code, human message, HTTP status and the offending field."""

    def __init__(self, code: str, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.code, self.message, self.status, self.field = code, message, status, field

    def to_dict(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


def from_validation(exc: ValidationError) -> ApiError:
    """The first pydantic error as a 422 naming the field (``disks.0.target_uri``)."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or None
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "field required"
    return ApiError("invalid_field", f"{field}: {message}" if field else message, 422, field)


def from_vma_error(exc: VmaError) -> ApiError:
    """Map the VMA's error tree to HTTP (most specific first)."""
    if isinstance(exc, JobNotFoundError):
        return ApiError("job_not_found", str(exc), 404, "job_id")
    if isinstance(exc, JobConflictError):
        return ApiError("conflict", str(exc), 409)
    if isinstance(exc, JobRequestError):
        return ApiError("invalid_field", str(exc), 422, exc.field)
    if isinstance(exc, JobError):
        return ApiError("job_error", str(exc), 409)
    if isinstance(exc, VmNotFoundError):
        return ApiError("vm_not_found", str(exc), 404, "vm_id")
    if isinstance(exc, VcenterNotConfiguredError):
        return ApiError("vcenter_not_configured", str(exc), 409)
    if isinstance(exc, VmwareConnectionError):
        return ApiError("vcenter_unreachable", str(exc), 502)
    if isinstance(exc, VmwareError):
        return ApiError("vcenter_error", str(exc), 502)
    if isinstance(exc, SourceError):
        return ApiError("source_error", str(exc), 500)
    return ApiError("vma_error", str(exc), 500)


def _respond(err: ApiError) -> Any:
    response = jsonify(err.to_dict())
    response.status_code = err.status
    if err.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def register_error_handlers(app: Flask) -> None:
    """Install the JSON error handlers on ``app``."""

    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Any:
        return _respond(exc)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Any:
        return _respond(from_validation(exc))

    @app.errorhandler(ContractError)
    def _contract(exc: ContractError) -> Any:
        return _respond(ApiError("invalid_field", str(exc), 422, exc.field))

    @app.errorhandler(VmaError)
    def _vma(exc: VmaError) -> Any:
        err = from_vma_error(exc)
        if err.status >= 500:
            log.error("request failed", code=err.code, error=str(exc))
        return _respond(err)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = _respond(ApiError(code, exc.description or exc.name, exc.code or 500))
        allow = exc.get_response().headers.get("Allow")
        if exc.code == 405 and allow:  # which methods the resource takes
            response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unexpected error")
        return _respond(ApiError("internal_error", f"internal error: {type(exc).__name__}", 500))
