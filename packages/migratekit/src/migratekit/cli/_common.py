"""What ``copy`` and ``run`` share: tuning options, config, progress sinks, the summary."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from . import _exit

if TYPE_CHECKING:
    from ..copy import CopyOptions, DiskResult
    from ..progress import ProgressHub


def tuning_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every copying command takes."""
    decorators = [
        click.option(
            "--connections",
            type=click.IntRange(1, 16),
            default=None,
            help="NBD connections per side when both servers allow multi-conn [default 2].",
        ),
        click.option(
            "--request-size",
            "request_size",
            default=None,
            metavar="BYTES",
            help="Bytes per request, e.g. 1M or 262144 [default 1M].",
        ),
        click.option(
            "--window",
            type=click.IntRange(1, 256),
            default=None,
            help="Requests in flight per connection [default 16].",
        ),
        click.option(
            "--retries",
            type=click.IntRange(0, 100),
            default=None,
            help="Reconnect attempts after a dropped connection [default 5].",
        ),
        click.option(
            "--timeout",
            type=float,
            default=None,
            help="Seconds without an answer before a connection is dead [60].",
        ),
        click.option(
            "--progress",
            "progress_mode",
            default="auto",
            type=click.Choice(["auto", "bar", "plain", "off"]),
            help="Progress on stderr: a bar on a TTY, plain lines otherwise.",
        ),
        click.option(
            "--progress-url",
            default=None,
            metavar="URL",
            help="VMA base URL; updates go to URL/api/v1/progress/JOB_ID/update "
            "with the token from MIGRATEKIT_PROGRESS_TOKEN.",
        ),
        click.option("--job-id", default=None, help="Job id used in progress URLs."),
        click.option("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR."),
        click.option("--debug", is_flag=True, default=False, help="Show tracebacks on errors."),
    ]
    return functools.reduce(lambda f, d: d(f), reversed(decorators), func)


def load(params: dict[str, Any]) -> tuple[dict[str, Any], CopyOptions]:
    """Config (env + CLI) and the copy options built from it."""
    from ..config import load_config
    from ..copy import CopyOptions

    overrides = {
        "CONNECTIONS": params.get("connections"),
        "REQUEST_SIZE": params.get("request_size"),
        "WINDOW": params.get("window"),
        "RETRIES": params.get("retries"),
        "TIMEOUT": params.get("timeout"),
        "LOG_LEVEL": params.get("log_level"),
    }
    config = load_config(overrides)
    options = CopyOptions(
        connections=config["CONNECTIONS"],
        request_size=config["REQUEST_SIZE"],
        window=config["WINDOW"],
        retries=config["RETRIES"],
        timeout=config["TIMEOUT"],
        verify=bool(params.get("verify")),
        splice=bool(config["SPLICE"]),
        flush_every=int(config["FLUSH_EVERY"]),
    )
    return config, options


def setup(config: dict[str, Any]) -> None:
    """Logging to stderr with the token registered as a secret."""
    from migration_common import register_secret, setup_logging

    setup_logging(str(config["LOG_LEVEL"]), stream=sys.stderr)
    register_secret(config.get("PROGRESS_TOKEN"))


def make_hub(
    config: dict[str, Any], mode: str, progress_url: str | None, job_id: str | None
) -> ProgressHub:
    """A started progress hub with the sinks asked for."""
    from ..errors import UsageError
    from ..progress import BarSink, HttpProgressSink, PlainSink, ProgressHub

    sinks: list[Any] = []
    if progress_url:
        if not progress_url.startswith(("http://", "https://")):
            raise UsageError(f"must be an http(s) URL, got {progress_url!r}", "--progress-url")
        if not job_id:
            raise UsageError(
                "--progress-url needs a job id (--job-id or the plan's job_id)", "--job-id"
            )
        sinks.append(HttpProgressSink(progress_url, job_id, config.get("PROGRESS_TOKEN")))
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        sinks.append(BarSink())
    elif mode == "plain" or mode == "auto":
        sinks.append(PlainSink())
    return ProgressHub(sinks, interval=config["PROGRESS_INTERVAL"]).start()


def summary_line(r: DiskResult) -> str:
    """One line per disk: status, sync type, bytes, duration, rate, reason."""
    from ..progress._terminal import human_bytes

    line = (
        f"disk {r.disk_key}: {r.status} ({r.sync_type}) "
        f"{human_bytes(r.bytes_written)} written, {human_bytes(r.bytes_zeroed)} zeroed "
        f"in {r.seconds:.2f}s ({human_bytes(r.throughput_bps)}/s)"
    )
    if r.digest:
        line += f" sha256={r.digest}"
    if r.error:
        line += f" — {r.error}"
    return line


class StopSignals:
    """SIGTERM/SIGINT set ``event``: workers stop taking requests, disks end ``stopped``.

    A second signal raises KeyboardInterrupt (immediate exit 130).
    """

    def __init__(self) -> None:
        import signal
        import threading

        self.event = threading.Event()
        self.signum: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()

    def exit_code(self, code: int) -> int:
        """128 + signal number when a signal stopped the run, else ``code``."""
        return 128 + self.signum if self.signum is not None else code


def exit_code(results: list[DiskResult]) -> int:
    """0 when every disk completed; 3 when the only failures are verify mismatches; else 1."""
    failed = [r for r in results if r.status != "completed"]
    if not failed:
        return _exit.OK
    if all(r.verify_failed for r in failed):
        return _exit.VERIFY_FAILED
    return _exit.COPY_FAILED


def write_report(path: str, job_id: str | None, results: list[DiskResult]) -> None:
    """Write the per-disk results JSON."""
    code = exit_code(results)
    doc = {
        "job_id": job_id,
        "status": "completed" if code == 0 else "failed",
        "exit_code": code,
        "disks": [r.to_dict() for r in results],
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
