"""The demo command itself (tools/demo/run.py, what ``nox -s demo`` runs), with small disks:
it succeeds with a byte check and a summary (with a customized disk offering and with a fixed
5 GB one), ``--keep`` leaves the services reachable until ``demo stop``, and Ctrl-C stops
everything it started. After each run no process that
belongs to the run (by its working directory, in argv or environment) is left."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
RUN = Path(__file__).resolve().parents[2] / "tools" / "demo" / "run.py"


def _processes_of(workdir: Path) -> list[int]:
    """PIDs whose command line or environment mentions ``workdir``."""
    needle = str(workdir).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (
                needle in (proc / "cmdline").read_bytes()
                or needle in (proc / "environ").read_bytes()
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("OMA_", "VMA_", "MIGRATEKIT_"))
    }


def _demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def test_demo_migrates_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    res = _demo("--small", "--progress", "plain", "--workdir", str(workdir))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "byte check: disk 203 equal, disk 204 equal" in out
    assert "[  failover] completed: downtime" in out
    for row in ("full", "incremental", "final (failover)", "test failover"):
        assert f"│ {row}" in out or f"\n{row} " in out, out[-2000:]
    # the test failover ran during the incremental and left CloudStack as it found it
    assert "test failover during job" in out  # started while the incremental was requested
    assert "VM demo-web-01-test" in out
    assert "CloudStack holds what it held before the test" in out
    assert "CloudStack afterwards as before the test (VMs, volumes, snapshots)" in " ".join(
        out.split()
    )
    assert "job=" in out and "status=replicating" in out  # plain progress lines
    assert _processes_of(workdir) == []


def test_demo_through_the_vsphere_source(tmp_path: Path) -> None:
    """``--source vsphere``: the VMA reads the VM with nbdkit and the VDDK stand-in on its
    snapshots, the incrementals from vCenter CBT; the same flow ends byte-identical."""
    workdir = tmp_path / "demo"
    args = ("--small", "--no-test", "--source", "vsphere", "--progress", "plain")
    res = _demo(*args, "--workdir", str(workdir))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "vSphere source: nbdkit + VDDK stand-in, CBT" in out
    assert "byte check: disk 203 equal, disk 204 equal" in out
    assert "[  failover] completed: downtime" in out
    assert "│ incremental      │ incremental" in out and "│ final (failover) │ incremental" in out
    assert _processes_of(workdir) == []


def test_demo_with_a_fixed_disk_offering(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    res = _demo(
        "--small",
        "--no-failover",
        "--disk-offering",
        "fixed",
        "--progress",
        "plain",
        "--workdir",
        str(workdir),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "disk offering Small is not customized: every replica volume gets its fixed 5 GB" in out
    # 64 MiB and 32 MiB disks on 5 GiB volumes: the source's bytes, then zeroes
    assert "sha256 of the source's 64.0 MiB" in out and "after them: all zero" in out
    assert (  # the summary may wrap long lines
        "byte check: disk 203 equal, disk 204 equal (sha256 over each source disk's size; "
        "the rest of each larger volume is zero)"
    ) in " ".join(out.split())
    assert _processes_of(workdir) == []


def test_demo_keep_then_stop(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    res = _demo(
        "--small", "--no-failover", "--keep", "--progress", "plain", "--workdir", str(workdir)
    )
    try:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "The lab keeps running:" in res.stdout
        record = json.loads((workdir / "services.json").read_text())
        assert set(record["pids"]) == {
            "vcsim",
            "cloudstack-sim",
            "vma-api-server",
            "oma-serve",
            "oma-worker",
        }
        token = (workdir / "oma-token").read_text().strip()
        assert (workdir / "oma-token").stat().st_mode & 0o777 == 0o600
        assert token not in res.stdout  # the token is in the file, not on the screen
        url = next(
            line.split()[2]
            for line in res.stdout.splitlines()
            if line.strip().startswith("OMA API")
        )
        ca = next(
            line.split()[2] for line in res.stdout.splitlines() if line.strip().startswith("OMA CA")
        )
        assert url.startswith("https://")  # the demo runs with TLS on
        req = urllib.request.Request(
            f"{url}/vm-contexts", headers={"Authorization": f"Bearer {token}"}
        )
        context = ssl.create_default_context(cafile=ca)
        with urllib.request.urlopen(req, timeout=10, context=context) as answer:
            contexts = json.loads(answer.read())
        items = contexts["items"] if isinstance(contexts, dict) else contexts
        assert [c["state"] for c in items] == ["ready_for_failover"]
    finally:
        stop = _demo("stop", "--workdir", str(workdir), timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert _processes_of(workdir) == []


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(RUN), "--small", "--progress", "plain", "--workdir", str(workdir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while "[      full] job" not in log.read_text():  # mid-run: the full sync started
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the demo
            assert proc.wait(120) == 130, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "demo cancelled" in log.read_text()
    assert _processes_of(workdir) == [], log.read_text()[-3000:]


def test_failure_is_one_line_and_stops_what_started(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = _env() | {"OMA_VMA_TIMEOUT": "soon"}  # the OMA refuses to start with this setting
    res = subprocess.run(
        [sys.executable, str(RUN), "--small", "--progress", "plain", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    first, *rest = res.stderr.strip().splitlines()
    assert first.startswith("demo failed: ") and "OMA_VMA_TIMEOUT" in first, res.stderr
    assert rest == [f"logs: {workdir}"]
    assert "[       vma] VMA API server on" in res.stdout  # it got that far, then stopped it
    assert _processes_of(workdir) == []


def test_missing_tools_are_named_with_the_apt_command(tmp_path: Path) -> None:
    env = _env() | {"PATH": str(tmp_path)}  # no qemu-img, qemu-nbd, qemu-io, go
    res = subprocess.run(
        [sys.executable, str(RUN), "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert res.returncode == 2
    assert "apt-get install -y golang-go qemu-utils" in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "demo failed: prerequisites missing (see above)"
    assert not (tmp_path / "demo").exists()  # nothing was started
