"""MIGRATEKIT_* settings: defaults, environment, command-line overrides, clear errors."""

from __future__ import annotations

import pytest

from migratekit.config import load_config, parse_size
from migration_common import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MIGRATEKIT_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    cfg = load_config()
    assert (cfg["CONNECTIONS"], cfg["REQUEST_SIZE"], cfg["WINDOW"]) == (2, 1 << 20, 16)
    assert cfg["PROGRESS_TOKEN"] is None and cfg["TIMEOUT"] == 60.0


def test_environment_then_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATEKIT_REQUEST_SIZE", "256K")
    monkeypatch.setenv("MIGRATEKIT_CONNECTIONS", "4")
    cfg = load_config({"CONNECTIONS": 3, "WINDOW": None})
    assert cfg["REQUEST_SIZE"] == 256 * 1024 and cfg["CONNECTIONS"] == 3 and cfg["WINDOW"] == 16


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("1M", 1 << 20), ("2MiB", 2 << 20), ("64k", 65536), ("1G", 1 << 30)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATEKIT_REQUEST_SIZE", "lots")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.variable == "MIGRATEKIT_REQUEST_SIZE"
    monkeypatch.delenv("MIGRATEKIT_REQUEST_SIZE")
    with pytest.raises(ConfigError, match="MIGRATEKIT_WINDOW"):
        load_config({"WINDOW": 0})


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATEKIT_PROGRESS_TOKEN", "tok-abcdef")
    assert load_config()["PROGRESS_TOKEN"] == "tok-abcdef"


def test_flush_every_accepts_zero_and_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config()["FLUSH_EVERY"] == 1 << 30
    monkeypatch.setenv("MIGRATEKIT_FLUSH_EVERY", "0")
    assert load_config()["FLUSH_EVERY"] == 0
    monkeypatch.setenv("MIGRATEKIT_FLUSH_EVERY", "256M")
    assert load_config()["FLUSH_EVERY"] == 256 << 20
