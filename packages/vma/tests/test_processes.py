"""Process identity (PID + start time), stop by process group, and the migratekit supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from labtest.procs import wait_until
from vma.services import processes


def test_spawn_alive_stop(tmp_path):
    pid, start = processes.spawn(["sleep", "60"], log_path=tmp_path / "log", env=os.environ)
    assert processes.alive(pid, start)
    assert not processes.alive(pid, start + 1)  # same PID, other process → not ours
    processes.stop(pid, start, grace=2)
    assert not processes.alive(pid, start)


def test_stop_escalates_to_sigkill(tmp_path):
    ready = tmp_path / "ignoring-sigterm"
    script = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
    )
    pid, start = processes.spawn(
        [sys.executable, "-c", script, str(ready)], log_path=tmp_path / "log", env=os.environ
    )
    wait_until(ready.exists, what="the child ignores SIGTERM")
    assert processes.child_returncode(pid) is None  # running, and our child
    processes.stop(pid, start, grace=0.3)
    # SIGTERM is ignored: only the SIGKILL after the grace period can have ended it
    assert not processes.alive(pid, start)


def _supervise(tmp_path, *command):
    exit_file, pid_file = tmp_path / "exit.json", tmp_path / "pid.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vma.services.supervise",
            str(exit_file),
            str(pid_file),
            "--",
            *command,
        ]
    )
    return proc, exit_file, pid_file


def test_supervisor_records_exit_code(tmp_path):
    proc, exit_file, pid_file = _supervise(tmp_path, "sh", "-c", "exit 3")
    assert proc.wait(30) == 3
    assert json.loads(exit_file.read_text()) == {"returncode": 3}
    assert json.loads(pid_file.read_text())["pid"] > 0


def test_supervisor_records_kill_signal(tmp_path):
    proc, exit_file, pid_file = _supervise(tmp_path, "sleep", "60")
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = json.loads(pid_file.read_text())["pid"]
    os.kill(child, signal.SIGKILL)
    assert proc.wait(30) == 128 + 9
    assert json.loads(exit_file.read_text()) == {"returncode": -9}


def test_supervisor_usage_error(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "vma.services.supervise", "x"], capture_output=True, text=True
    )
    assert res.returncode == 2 and "usage" in res.stderr
