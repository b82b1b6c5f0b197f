"""``oma bandwidth`` against a real ``oma serve`` (gunicorn) process, and its window syntax."""

from __future__ import annotations

import json

import pytest

from oma.cli._errors import CliError, ExitCode
from oma.cli.bandwidth import parse_window

from .test_waves_cli import oma, served  # noqa: F401  (the served fixture)

MiB = 1 << 20


def test_window_syntax() -> None:
    assert parse_window("mon-fri 08:00-18:00 50MiB") == {
        "days": ["mon-fri"],
        "start": "08:00",
        "end": "18:00",
        "rate_bps": 50 * MiB,
    }
    assert parse_window("sat,sun 00:00-24:00 unlimited")["rate_bps"] is None
    for bad in ("mon-fri 08:00 50MiB", "weekdays", "mon 08:00-09:00 fast"):
        with pytest.raises(CliError) as info:
            parse_window(bad)
        assert info.value.code == ExitCode.USAGE


@pytest.mark.slow
def test_set_show_clear(served: dict[str, str]) -> None:  # noqa: F811
    env = served
    made = oma(
        env, "bandwidth", "set", "--window", "mon-fri 08:00-18:00 50MiB", "--tz", "Europe/Paris"
    )
    assert made.returncode == 0, made.stderr
    assert "global: unlimited outside windows, timezone Europe/Paris" in made.stdout
    assert "mon,tue,wed,thu,fri" in made.stdout and "50.0 MiB/s" in made.stdout
    doc = json.loads(oma(env, "bandwidth", "show", "--json").stdout)
    assert doc["policy"]["windows"][0]["rate_bps"] == 50 * MiB

    vma = oma(env, "bandwidth", "set", "--vma", "v", "--rate", "20MiB")
    assert vma.returncode == 0, vma.stderr
    assert "VMA v: 20.0 MiB/s outside windows" in vma.stdout

    bad = oma(env, "bandwidth", "set", "--window", "mon-fri 18:00-08:00 5M")
    assert bad.returncode == ExitCode.REJECTED
    assert "(field windows[0].end)" in bad.stderr
    bad = oma(env, "bandwidth", "set", "--tz", "Moon/Base")
    assert bad.returncode == ExitCode.REJECTED and "(field timezone)" in bad.stderr
    bad = oma(env, "bandwidth", "set", "--rate", "fast")
    assert bad.returncode == ExitCode.USAGE and "--rate" in bad.stderr

    assert oma(env, "bandwidth", "clear").returncode == 0
    assert "global: no limit set" in oma(env, "bandwidth", "show").stdout
    assert "VMA v: 20.0 MiB/s" in oma(env, "bandwidth", "show", "--vma", "v").stdout
