"""Processes the VMA starts and must find again after a restart: liveness and stop by PID.

A PID alone is not an identity (PIDs are reused), so every process we record is stored with
its kernel start time (``/proc/<pid>/stat`` field 22). A process counts as alive only when a
process with that PID *and* that start time exists and is not a zombie. Stopping always
targets the process group the VMA created for it (each child runs in its own session).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_children: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def start_time(pid: int) -> int | None:
    """The kernel start time of ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()
    # fields[0] is the state (stat field 3); start time is stat field 22 → index 19 here.
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def spawn(
    argv: Sequence[str],
    *,
    log_path: str | os.PathLike[str],
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[int, int]:
    """Start ``argv`` in its own session, output appended to ``log_path``; return (pid, start).

    A new log file is created 0600: it may name hosts, paths and disk layouts.
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    with _lock:
        _children[proc.pid] = proc
    started = start_time(proc.pid)
    return proc.pid, started if started is not None else 0


def alive(pid: int | None, started: int | None) -> bool:
    """True while the process we recorded as (pid, start time) still runs."""
    if not pid:
        return False
    with _lock:
        child = _children.get(pid)
    if child is not None and child.poll() is not None:
        with _lock:
            _children.pop(pid, None)
        return False
    now = start_time(pid)
    if now is None:
        return False
    return not started or now == started


def child_returncode(pid: int) -> int | None:
    """The exit code of a child this process started and reaped (None if unknown)."""
    with _lock:
        child = _children.get(pid)
    return None if child is None else child.poll()


def stop(pid: int | None, started: int | None, *, grace: float = 10.0) -> None:
    """Stop the process group led by ``pid``: SIGTERM, then SIGKILL after ``grace`` seconds.

    Nothing is signalled unless the leader (PID and start time) is alive: a dead leader's PID
    may belong to somebody else by now. While any member of the group lives, its group id
    cannot be reused, so the final SIGKILL to the group reaches only our stragglers.
    """
    if not alive(pid, started):
        return
    assert pid is not None
    _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.05)
    with _lock:
        _children.pop(pid, None)


def kill(pid: int | None, started: int | None) -> bool:
    """SIGKILL one process (not its group) if it is still the one we recorded; True if sent."""
    if not alive(pid, started):
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    return True


def _kill_group(pid: int | None, sig: int) -> None:
    if not pid:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
