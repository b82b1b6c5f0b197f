"""Logging: one line per event, fields attached, secrets never printed."""

from __future__ import annotations

import io
import json
import logging

import pytest

from migration_common import get_logger, register_secret, setup_logging


@pytest.fixture
def stream():
    buf = io.StringIO()
    handler = setup_logging("DEBUG", stream=buf)
    yield buf
    logging.getLogger().removeHandler(handler)


def test_key_value_line_with_fields(stream):
    get_logger("t", job_id="j1").info("disk copied", disk_key="2000", bytes=42, note="a b")
    line = stream.getvalue().strip()
    assert "\n" not in line
    assert 'msg="disk copied"' in line and "job_id=j1" in line and "disk_key=2000" in line
    assert 'note="a b"' in line and "bytes=42" in line and "level=info" in line


def test_passwords_never_appear(stream):
    secret = "S3cr3t-P@ss!"
    register_secret(secret)
    log = get_logger("t")
    log.info("login", password=secret, username="admin")
    log.info(f"connecting with {secret}")
    log.info("header", headers={"Authorization": "Bearer abcdef123456"})
    log.warning("token in text: Bearer xyz987654321")
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        log.exception("boom")
    out = stream.getvalue()
    assert secret not in out
    assert "abcdef123456" not in out and "xyz987654321" not in out
    assert "password=***" in out and "username=admin" in out


def test_json_lines(stream):
    setup_logging("INFO", json_lines=True, stream=stream)
    get_logger("t").info("ready", api_token="tok-123456", port=8081)
    event = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert event["msg"] == "ready" and event["port"] == 8081 and event["api_token"] == "***"
