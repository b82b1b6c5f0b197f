"""Start servers on free loopback ports, wait until they answer, stop exactly them by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
    proc: subprocess.Popen | None = None,
) -> None:
    """Poll ``check`` until it returns True; raise TimeoutError (or the process's death)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process {proc.pid} exited with code {proc.returncode}")
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class ManagedProcess:
    """A server process in its own process group, logged to a file, stopped by PID.

    ``stop()`` sends SIGTERM to the group, waits ``grace`` seconds, then SIGKILL. It only ever
    signals the process group it created — never anything found by name.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.log_path = Path(log_path) if log_path else None
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def pid(self) -> int:
        """PID of the started process."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> ManagedProcess:
        """Start the process (own session/process group)."""
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        out = self._log if self._log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_port(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        """Wait until host:port accepts connections (or the process dies)."""
        wait_until(
            lambda: port_open(host, port),
            timeout,
            what=f"{self.name} on {host}:{port}",
            proc=self.proc,
        )

    def wait_path(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        """Wait until ``path`` exists (a unix socket, a pid file…)."""
        wait_until(
            lambda: Path(path).exists(), timeout, what=f"{self.name}: {path}", proc=self.proc
        )

    def log_text(self) -> str:
        """What the process wrote so far (empty without a log file)."""
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group (for crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            if sig == signal.SIGKILL:
                self.proc.wait(10)

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop the process group: SIGTERM, then SIGKILL after ``grace``; return exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # members of the group that outlived the leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    port: int | None = None,
    path: str | None = None,
    timeout: float = 30.0,
    **kw: object,
) -> Iterator[ManagedProcess]:
    """Start ``argv``, wait for ``port`` (or ``path``), yield it, and always stop it."""
    proc = ManagedProcess(argv, **kw)  # type: ignore[arg-type]
    proc.start()
    try:
        if port is not None:
            proc.wait_port(port, timeout=timeout)
        if path is not None:
            proc.wait_path(path, timeout=timeout)
        yield proc
    finally:
        proc.stop()
