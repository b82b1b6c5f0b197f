"""Follow a job until it finishes: a live bar on a TTY, plain lines otherwise."""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import click

from ._client import ApiClient
from ._errors import CliError, ExitCode
from ._format import progress_bar, progress_line

TERMINAL = {"completed", "failed", "stopped"}
UNREACHABLE_GRACE = 60.0  # seconds --watch waits for an API that went away


class CtrlC:
    """While entered, SIGINT (Ctrl-C) raises KeyboardInterrupt on the main thread.

    Python turns SIGINT into KeyboardInterrupt only when SIGINT was at its default at
    start-up: a process started with SIGINT ignored (a job put in the background by a
    non-interactive shell, e.g. a CI script or a test runner started with ``&``, and all
    its children) keeps ignoring it, so ``--watch`` would poll on until the job ends. The
    handler is installed explicitly, before the first poll prints anything, and the
    previous one is restored on exit. The signal is also remembered: should the
    KeyboardInterrupt be raised where Python cannot propagate it (inside a ``__del__`` or
    another finaliser, where it is only reported as "Exception ignored"), :meth:`check`
    and :meth:`sleep` raise it at the next poll.
    """

    def __init__(self) -> None:
        self.hit = False
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGINT, previous)
            self._installed = False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if SIGINT came (even if its first raise was lost)."""
        if self.hit:
            raise KeyboardInterrupt

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` that SIGINT ends at once, checked before and after."""
        self.check()
        time.sleep(seconds)
        self.check()


def watch(
    api: ApiClient, job_id: str, *, interval: float = 1.0, tty: bool | None = None
) -> dict[str, Any]:
    """Poll the job until it is terminal; return the final job document.

    On a TTY one bar line is redrawn in place; otherwise a plain ``key=value`` line is printed
    at most every ``interval`` seconds, and at every status or phase change (a requested stop
    shows as ``status=replicating(stop requested)``). An unreachable API (a restart) is waited
    for up to ``UNREACHABLE_GRACE`` seconds. Ctrl-C (SIGINT) ends the watch, whatever SIGINT
    disposition the process inherited (see :class:`CtrlC`), with a CANCELLED error saying that
    the job goes on and how to re-attach.
    """
    live = sys.stdout.isatty() if tty is None else tty
    try:
        with CtrlC() as ctrl_c:
            return _watch(api, job_id, interval=interval, live=live, ctrl_c=ctrl_c)
    except KeyboardInterrupt:
        if live:
            click.echo()  # off the bar's line
        short = job_id[:8]
        raise CliError(
            f"cancelled; job {job_id} goes on (stop it with `oma stop {short}`)",
            hint=f"re-attach with `oma job {short} --watch`",
            code=ExitCode.CANCELLED,
        ) from None


def _watch(
    api: ApiClient, job_id: str, *, interval: float, live: bool, ctrl_c: CtrlC
) -> dict[str, Any]:
    last_key: tuple[Any, ...] | None = None
    last_print = 0.0
    down_since: float | None = None
    while True:
        try:
            job = api.get(f"replications/{job_id}")
        except CliError as exc:
            # The API may restart under us: keep watching for a while before giving up.
            if exc.code != ExitCode.UNREACHABLE:
                raise
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > UNREACHABLE_GRACE:
                raise
            ctrl_c.sleep(interval)
            continue
        ctrl_c.check()
        down_since = None
        p = {**job, "job_status": job["status"]}
        key = (job["status"], job.get("phase"), job.get("stop_requested"))
        now = time.monotonic()
        if live:
            click.echo("\r" + progress_bar(p).ljust(100), nl=False)
        elif key != last_key or now - last_print >= interval:
            click.echo(progress_line(p))
            last_print = now
        last_key = key
        if job["status"] in TERMINAL:
            if live:
                click.echo()
            return job
        ctrl_c.sleep(interval)


def error_text(job: dict[str, Any]) -> str:
    """``class: message`` of a job's error (just the message when it has no class)."""
    message = job.get("error_message") or "no error recorded"
    return f"{job['error_class']}: {message}" if job.get("error_class") else message


def summary(job: dict[str, Any]) -> str:
    """``moved 3.0 GiB in 0:01:02 (49.5 MiB/s)`` (what is known of it)."""
    from ._format import duration, elapsed, rate, size

    took = elapsed(job.get("started_at") or job.get("created_at"), job.get("finished_at"))
    text = f"moved {size(job.get('bytes_done'))}"
    if took:
        text += f" in {duration(took)} ({rate((job.get('bytes_done') or 0) / took)})"
    return text


def finish(job: dict[str, Any]) -> None:
    """Print the outcome of a finished job and exit with its code."""
    from ._format import size

    for d in job.get("disks") or []:
        click.echo(
            f"  disk {d['disk_key']}: {d['status']} {size(d['bytes_done'])} "
            f"(written {size(d['bytes_written'])}, zeroed {size(d['bytes_zeroed'])})"
            + (f" change_id={d['change_id']}" if d.get("change_id") else "")
        )
    short = job["id"][:8]
    if job["status"] == "completed":
        click.echo(f"job {job['id']} completed ({job['sync_type'] or job['type']}): {summary(job)}")
        return
    if job["status"] == "stopped":
        raise CliError(
            f"job {job['id']} was stopped ({summary(job)})",
            hint="run `oma replicate VM` to sync again (volumes are reused)",
            code=ExitCode.JOB_STOPPED,
        )
    raise CliError(
        f"job {job['id']} of {job.get('vm_name') or 'the VM'} failed: {error_text(job)}",
        hint=f"see `oma job {short}`; fix the cause, then run `oma replicate "
        f"{job.get('vm_name') or 'VM'}` again (volumes are reused)",
        code=ExitCode.JOB_FAILED,
    )


__all__ = ["CtrlC", "error_text", "finish", "summary", "watch"]
