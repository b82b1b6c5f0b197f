"""The command line itself: usage errors, help and version (no NBD server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_mk

VERSION = (Path(__file__).resolve().parents[1] / "VERSION").read_text().strip()


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (
            ("copy", "--connections", "99", "nbd://h/a", "nbd://h/b"),
            "error: argument --connections: must be at most 16, got 99",
        ),
        (
            ("copy", "--window", "lots", "nbd://h/a", "nbd://h/b"),
            "error: argument --window: expected an integer, got 'lots'",
        ),
        (
            ("copy", "--request-size", "1X", "nbd://h/a", "nbd://h/b"),
            "error: argument --request-size: expected a size like 1048576, 256K or 1M, got '1X'",
        ),
        (
            ("copy", "--progress", "loud", "nbd://h/a", "nbd://h/b"),
            "error: argument --progress: invalid choice: 'loud' (choose from",
        ),
        (("copy", "nbd://h/a"), "error: the following arguments are required: TARGET_URI"),
        (("run",), "error: the following arguments are required: --plan"),
        (("copy", "--nope", "nbd://h/a", "nbd://h/b"), "error: unrecognized arguments: --nope"),
        ((), "error: the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...], first_line: str) -> None:
    res = run_mk(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith(first_line)  # the list of choices is quoted per Python version
    assert lines[1].startswith("hint: see migratekit")
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_help_lists_commands_and_options() -> None:
    res = run_mk("--help")
    assert res.returncode == 0
    assert "copy" in res.stdout and "run" in res.stdout and "MIGRATEKIT_CONNECTIONS" in res.stdout
    res = run_mk("copy", "--help")
    assert res.returncode == 0
    for option in ("--changed-extents", "--dirty-bitmap", "--target-is-zero", "--connections"):
        assert option in res.stdout


def test_version_matches_the_version_file() -> None:
    res = run_mk("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"migratekit, version {VERSION}"
