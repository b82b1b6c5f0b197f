"""Settings: every failure names the variable; the launcher keeps secrets off its argv."""

from __future__ import annotations

import pytest

from migration_common import ConfigError
from vma_api_server import cli
from vma_api_server.config import child_environment, load_config

TOKEN = "a-token-of-enough-length"


def test_defaults(monkeypatch):
    monkeypatch.setenv("VMA_API_TOKEN", TOKEN)
    cfg = load_config()
    assert cfg["BIND"] == ("0.0.0.0", 8081)
    assert cfg["PROGRESS_URL"] == "http://127.0.0.1:8081"
    assert cfg["MAX_CONCURRENT_JOBS"] == 4 and cfg["LAB_DIR"] is None
    assert cfg["JOB_RETENTION_DAYS"] == 14
    assert "migratekit" in " ".join(cfg["MIGRATEKIT"])


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "VMA_API_TOKEN"),
        ({"VMA_API_TOKEN": "short"}, "VMA_API_TOKEN"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_BIND": "nohost"}, "VMA_BIND"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_MAX_CONCURRENT_JOBS": "0"}, "VMA_MAX_CONCURRENT_JOBS"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_STOP_GRACE": "soon"}, "VMA_STOP_GRACE"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_VCENTER_HOST": "vc"}, "VMA_VCENTER_USER"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_PROGRESS_URL": "ftp://x"}, "VMA_PROGRESS_URL"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_LOG_LEVEL": "LOUD"}, "VMA_LOG_LEVEL"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_JOB_RETENTION_DAYS": "-1"}, "VMA_JOB_RETENTION_DAYS"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_JOB_RETENTION_DAYS": "3651"}, "VMA_JOB_RETENTION_DAYS"),
        ({"VMA_API_TOKEN": TOKEN, "VMA_JOB_RETENTION_DAYS": "2w"}, "VMA_JOB_RETENTION_DAYS"),
    ],
)
def test_invalid_settings_name_the_variable(monkeypatch, env, variable):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.variable == variable


@pytest.mark.parametrize(("text", "days"), [("0", 0), ("7", 7), (" 3650 ", 3650)])
def test_job_retention_days(monkeypatch, text, days):
    monkeypatch.setenv("VMA_API_TOKEN", TOKEN)
    monkeypatch.setenv("VMA_JOB_RETENTION_DAYS", text)
    assert load_config()["JOB_RETENTION_DAYS"] == days


def test_secret_value_not_echoed(monkeypatch):
    monkeypatch.setenv("VMA_API_TOKEN", "tiny")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "tiny" not in str(info.value)


def test_toml_file(monkeypatch, tmp_path):
    path = tmp_path / "vma.toml"
    path.write_text(f'api_token = "{TOKEN}"\nbind = "127.0.0.1:9999"\nmax_concurrent_jobs = 2\n')
    monkeypatch.setenv("VMA_CONFIG", str(path))
    cfg = load_config()
    assert cfg["BIND"] == ("127.0.0.1", 9999) and cfg["MAX_CONCURRENT_JOBS"] == 2


def test_cli_reports_config_error(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: VMA_API_TOKEN: is required")
    assert "hint:" in err


def test_cli_settings_table(capsys):
    assert cli.main(["--settings"]) == 0
    out = capsys.readouterr().out
    for name in ("VMA_API_TOKEN", "VMA_BIND", "VMA_DATA_DIR", "VMA_LAB_DIR", "VMA_VCENTER_HOST"):
        assert name in out


def test_gunicorn_argv_and_child_env_carry_no_secrets(monkeypatch):
    monkeypatch.setenv("VMA_API_TOKEN", TOKEN)
    monkeypatch.setenv("VMA_VCENTER_PASSWORD", "vc-password-1")
    monkeypatch.setenv("VMA_VCENTER_HOST", "vc")
    monkeypatch.setenv("VMA_VCENTER_USER", "u")
    argv = cli.gunicorn_argv(load_config())
    assert "--workers" in argv and argv[argv.index("--workers") + 1] == "1"
    assert argv[-1] == "vma_api_server:create_app()"
    assert not any(TOKEN in a or "vc-password-1" in a for a in argv)
    env = child_environment()
    assert "VMA_API_TOKEN" not in env and "VMA_VCENTER_PASSWORD" not in env
    assert env["VMA_VCENTER_USER"] == "u"


def test_short_token_error_names_the_minimum_length(monkeypatch, capsys):
    monkeypatch.setenv("VMA_API_TOKEN", "short-token")
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        "error: VMA_API_TOKEN: is too short: it must be at least 16 characters "
        "(the value is not shown)"
    )
    assert "short-token" not in err


@pytest.mark.parametrize(("arg", "what"), [("--bind", "option"), ("serve", "command")])
def test_unknown_arguments_are_reported(monkeypatch, capsys, arg, what):
    monkeypatch.setenv("VMA_API_TOKEN", TOKEN)
    assert cli.main([arg, "x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: unknown {what} {arg!r}"
    assert err[1].startswith("hint: ") and "vma-api-server --help" in err[1]


def test_help_shows_defaults_as_written_in_the_environment(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    bind = next(line for line in out.splitlines() if line.startswith("VMA_BIND "))
    assert "0.0.0.0:8081" in bind and "(" not in bind.split("host:port")[0]
    insecure = next(ln for ln in out.splitlines() if ln.startswith("VMA_VCENTER_INSECURE "))
    assert " false " in insecure
