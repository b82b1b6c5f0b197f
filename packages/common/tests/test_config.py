"""Configuration loading: env over TOML over defaults, errors naming the variable."""

from __future__ import annotations

import pytest

from migration_common import (
    ConfigError,
    Setting,
    describe,
    load_settings,
    parse_bool,
    parse_hostport,
    parse_int,
    parse_port_range,
    parse_seconds,
)

SETTINGS = (
    Setting("BIND", "address to listen on", "0.0.0.0:8081", parse_hostport),
    Setting("WORKERS", "gunicorn workers", 2, parse_int(1, 64)),
    Setting("INSECURE", "skip TLS verification", False, parse_bool),
    Setting("API_TOKEN", "bearer token", required=True, secret=True),
    Setting("PORTS", "export ports", (10100, 10199), parse_port_range),
    Setting("POLL", "poll interval", 5.0, parse_seconds),
)


def test_defaults_and_env_values():
    cfg = load_settings("VMA", SETTINGS, environ={"VMA_API_TOKEN": "t0k3n", "VMA_WORKERS": "4"})
    assert cfg["BIND"] == "0.0.0.0:8081"
    assert cfg["WORKERS"] == 4
    assert cfg["API_TOKEN"] == "t0k3n"
    assert cfg["PORTS"] == (10100, 10199)


def test_missing_required_variable_is_named():
    with pytest.raises(ConfigError) as info:
        load_settings("VMA", SETTINGS, environ={})
    assert info.value.variable == "VMA_API_TOKEN"
    assert "VMA_API_TOKEN: is required" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("VMA_BIND", "localhost", "expected host:port"),
        ("VMA_WORKERS", "0", "at least 1"),
        ("VMA_WORKERS", "many", "expected an integer"),
        ("VMA_INSECURE", "maybe", "expected true or false"),
        ("VMA_PORTS", "200-100", "first <= last"),
        ("VMA_POLL", "-1", "greater than 0"),
    ],
)
def test_invalid_values_name_the_variable(name, value, text):
    env = {"VMA_API_TOKEN": "x", name: value}
    with pytest.raises(ConfigError) as info:
        load_settings("VMA", SETTINGS, environ=env)
    assert info.value.variable == name
    assert text in str(info.value)


def test_secret_values_are_not_echoed_in_errors():
    settings = (Setting("PASSWORD", "pw", parse=parse_int(), secret=True),)
    with pytest.raises(ConfigError) as info:
        load_settings("X", settings, environ={"X_PASSWORD": "hunter2-secret"})
    assert "hunter2-secret" not in str(info.value)


def test_toml_file_then_env_then_overrides(tmp_path):
    path = tmp_path / "vma.toml"
    path.write_text('bind = "127.0.0.1:9000"\nworkers = 3\ninsecure = true\napi_token = "f"\n')
    env = {"VMA_CONFIG": str(path), "VMA_WORKERS": "5"}
    cfg = load_settings("VMA", SETTINGS, environ=env)
    assert cfg["BIND"] == ("127.0.0.1", 9000)
    assert cfg["WORKERS"] == 5
    assert cfg["INSECURE"] is True
    cfg = load_settings("VMA", SETTINGS, environ=env, overrides={"WORKERS": 7})
    assert cfg["WORKERS"] == 7


def test_unknown_toml_key_and_bad_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('api_token = "x"\nbindd = "oops"\n')
    with pytest.raises(ConfigError, match="unknown setting 'bindd'") as info:
        load_settings("VMA", SETTINGS, environ={"VMA_CONFIG": str(path)})
    assert info.value.variable == "VMA_CONFIG"
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings("VMA", SETTINGS, environ={"VMA_CONFIG": str(path)})
    with pytest.raises(ConfigError, match="file not found"):
        load_settings("VMA", SETTINGS, environ={"VMA_CONFIG": str(tmp_path / "none.toml")})


def test_describe_lists_every_variable():
    text = describe("VMA", SETTINGS)
    assert "VMA_BIND" in text and "(required)" in text
