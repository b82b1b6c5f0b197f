"""gunicorn answers in the APIs' JSON error shape.

gunicorn itself refuses some requests before the application sees them: a request line over
``limit_request_line`` (414), too many or too large header fields (431), malformed requests
(400). It writes those answers as HTML pages. :func:`use_json_error_pages` makes them the same
``{"error": {"code", "message", "field"}}`` document every other API error is.

It replaces ``gunicorn.util.write_error``, the one function gunicorn's workers use for these
answers; call it in the process that starts gunicorn, before the workers fork.
"""

from __future__ import annotations

import json

CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal",
    501: "not_implemented",
}


def error_document(status: int, reason: str, message: str) -> bytes:
    """The raw HTTP/1.1 response gunicorn sends for a request it refused."""
    text = f"{reason}: {message}" if message and status != 500 else reason
    if status == 500:
        text = "internal server error; see the server log"
    body = json.dumps(
        {"error": {"code": CODES.get(status, "http_error"), "message": text, "field": None}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def use_json_error_pages() -> None:
    """Make gunicorn write its own error answers as JSON (idempotent)."""
    from gunicorn import util

    def write_error(sock, status_int: int, reason: str, mesg: str) -> None:
        util.write_nonblock(sock, error_document(int(status_int), reason, mesg))

    util.write_error = write_error
