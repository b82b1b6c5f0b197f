"""gunicorn's own refusals (414, 431, 400) in the APIs' JSON error shape."""

from __future__ import annotations

import json

from migration_common._gunicorn import error_document


def test_error_document_is_json_with_the_status_and_length():
    raw = error_document(414, "URI Too Long", "Request Line is too large (8192 > 4094)")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    error = json.loads(body)["error"]
    assert error["code"] == "uri_too_long" and "4094" in error["message"]


def test_internal_errors_say_nothing_of_the_cause():
    body = error_document(500, "Internal Server Error", "").split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["error"]["message"] == "internal server error; see the server log"
