"""Fixtures: an app on a temporary data directory (runner not started), its client, auth."""

from __future__ import annotations

import os

import pytest

from vma_api_server import create_app

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_vma_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VMA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def app(tmp_path):
    app = create_app({"API_TOKEN": TOKEN, "DATA_DIR": str(tmp_path / "data")}, start_runner=False)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
