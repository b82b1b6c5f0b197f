"""The systemd units in deploy/systemd: valid for systemd, their commands exist once installed.

``systemd-analyze verify`` checks every directive and that each Exec command is executable; the
units' /opt/oma and /opt/vma virtualenvs are replaced by this test environment's, which has the
same console scripts (``oma``, ``vma-api-server``).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
NAMES = ["oma-serve.service", "oma-worker.service", "vma-api-server.service"]


def _service(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser["Service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is absent")
def test_units_verify_with_the_installed_commands(tmp_path: Path) -> None:
    bindir = str(Path(sys.executable).parent) + "/"
    for name in NAMES:
        text = (UNITS / name).read_text()
        text = text.replace("/opt/oma/bin/", bindir).replace("/opt/vma/bin/", bindir)
        (tmp_path / name).write_text(text)
    res = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in NAMES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr  # an unknown directive is only a warning


def test_units_run_unprivileged_with_private_state() -> None:
    for name in NAMES:
        service = _service(name)
        assert service["User"] in ("oma", "vma"), name
        assert service["StateDirectoryMode"] == "0700", name
        assert service["UMask"] == "0077", name
        assert service["NoNewPrivileges"] == "yes", name
        assert service["CapabilityBoundingSet"] == "", name
        assert service["ProtectSystem"] == "strict", name
    # the worker's qemu-nbd needs the attached volumes; the API needs no devices at all
    worker = _service("oma-worker.service")
    assert worker["SupplementaryGroups"] == "disk" and worker["PrivateDevices"] == "no"
    assert _service("oma-serve.service")["PrivateDevices"] == "yes"
