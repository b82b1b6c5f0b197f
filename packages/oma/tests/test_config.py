"""OMA configuration: defaults, derivations, precedence and errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_common import ConfigError
from oma.config import SETTINGS, load_client_config, load_config


def test_defaults_and_derived_values(tmp_path: Path) -> None:
    cfg = load_config(environ={"OMA_DATA_DIR": str(tmp_path)})
    assert cfg.data_dir == tmp_path
    assert cfg.database_url == f"sqlite:///{tmp_path.resolve() / 'oma.db'}"
    assert cfg.bind == ("0.0.0.0", 8082) and cfg.bind_url == "http://127.0.0.1:8082"
    assert cfg.nbd_port_range == (10100, 10199)
    assert cfg.nbd_bind_host == cfg.nbd_advertise_host == "127.0.0.1"
    assert str(cfg.by_id_dir) == "/dev/disk/by-id"
    assert (
        cfg.poll_interval,
        cfg.vma_unreachable_timeout,
        cfg.job_lost_timeout,
        cfg.stale_timeout,
    ) == (5.0, 120.0, 60.0, 900.0)
    assert (cfg.cloudstack_poll_interval, cfg.device_timeout) == (2.0, 60.0)
    assert cfg.auto_upgrade is True and cfg.log_level == "INFO"
    assert cfg.worker_id and cfg.secret_key is None
    # Mapping-style access for callers that prefer it.
    assert cfg["POLL_INTERVAL"] == cfg["oma_poll_interval"] == cfg.poll_interval


def test_environment_toml_and_override_precedence(tmp_path: Path) -> None:
    toml = tmp_path / "oma.toml"
    toml.write_text('poll_interval = 3\nnbd_bind_host = "10.0.0.5"\nbind = "127.0.0.1:9000"\n')
    env = {"OMA_CONFIG": str(toml), "OMA_POLL_INTERVAL": "2", "OMA_DATA_DIR": str(tmp_path)}
    cfg = load_config(environ=env)
    assert cfg.poll_interval == 2.0  # environment beats the file
    assert cfg.nbd_bind_host == cfg.nbd_advertise_host == "10.0.0.5"
    assert cfg.bind == ("127.0.0.1", 9000)
    cfg = load_config(
        {"OMA_POLL_INTERVAL": "1.5", "nbd_advertise_host": "oma.example"}, environ=env
    )
    assert cfg.poll_interval == 1.5 and cfg.nbd_advertise_host == "oma.example"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OMA_POLL_INTERVAL", "soon"),
        ("OMA_STALE_TIMEOUT", "-1"),
        ("OMA_NBD_PORT_RANGE", "10199-10100"),
        ("OMA_BIND", "8082"),
        ("OMA_DATABASE_URL", "oracle://db"),
        ("OMA_AUTO_UPGRADE", "maybe"),
        ("OMA_LOG_LEVEL", "LOUD"),
        ("OMA_LOG_FORMAT", "xml"),
        ("OMA_API_WORKERS", "0"),
        ("OMA_NBD_BIND_HOST", "a b"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ={variable: value})
    assert err.value.variable == variable
    assert variable in str(err.value)


def test_unknown_override_or_toml_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"POLL_INTERVALL": 1}, environ={})
    assert err.value.variable == "OMA_POLL_INTERVALL"
    toml = tmp_path / "oma.toml"
    toml.write_text("pol_interval = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(environ={"OMA_CONFIG": str(toml)})
    assert err.value.variable == "OMA_CONFIG"


def test_secret_values_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ={"OMA_DATABASE_URL": "mongodb://user:hunter2@db"})
    assert "hunter2" not in str(err.value)


def test_every_setting_is_documented() -> None:
    names = {s.name for s in SETTINGS}
    for required in (
        "DATA_DIR",
        "DATABASE_URL",
        "BIND",
        "SECRET_KEY",
        "NBD_BIND_HOST",
        "NBD_ADVERTISE_HOST",
        "NBD_PORT_RANGE",
        "BY_ID_DIR",
        "POLL_INTERVAL",
        "VMA_UNREACHABLE_TIMEOUT",
        "JOB_LOST_TIMEOUT",
        "STALE_TIMEOUT",
        "WORKER_ID",
        "CLOUDSTACK_POLL_INTERVAL",
        "DEVICE_TIMEOUT",
        "AUTO_UPGRADE",
        "LOG_LEVEL",
    ):
        assert required in names
    assert all(s.doc for s in SETTINGS)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in names:
        assert f"OMA_{name}" in readme, f"OMA_{name} missing from README"


def test_client_config() -> None:
    cfg = load_client_config(environ={"OMA_URL": "http://oma:8082/", "OMA_TOKEN": "t0k"})
    assert (cfg.url, cfg.token, cfg.debug) == ("http://oma:8082", "t0k", False)
    assert load_client_config({"URL": "http://x"}, environ={}).url == "http://x"


def test_nbd_cache_and_aio(tmp_path: Path) -> None:
    base = {"OMA_DATA_DIR": str(tmp_path)}
    cfg = load_config(environ=base)
    assert (cfg.nbd_cache, cfg.nbd_aio) == ("writeback", None)  # works on any filesystem
    cfg = load_config(environ={**base, "OMA_NBD_CACHE": "none", "OMA_NBD_AIO": "native"})
    assert (cfg.nbd_cache, cfg.nbd_aio) == ("none", "native")
    for env, variable in (
        ({"OMA_NBD_CACHE": "fast"}, "OMA_NBD_CACHE"),
        ({"OMA_NBD_AIO": "posix"}, "OMA_NBD_AIO"),
        ({"OMA_NBD_AIO": "native"}, "OMA_NBD_AIO"),  # native needs O_DIRECT (cache none)
    ):
        with pytest.raises(ConfigError) as err:
            load_config(environ={**base, **env})
        assert err.value.variable == variable
