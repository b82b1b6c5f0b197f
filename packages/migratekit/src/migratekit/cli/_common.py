"""What ``copy`` and ``run`` share: the parser, tuning options, config, progress, the summary."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import _exit

if TYPE_CHECKING:
    from ..copy import CopyOptions, DiskResult
    from ..progress import ProgressHub


class Parser(argparse.ArgumentParser):
    """argparse with our error format: ``error: …`` plus a hint, exit 2 (USAGE)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        _exit.fail(message, f"see {self.prog} --help", _exit.USAGE)


class VersionAction(argparse.Action):
    """``--version``: looks the version up only when asked (importlib.metadata is slow)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import version

        print(f"migratekit, version {version('migratekit')}")
        parser.exit()


def setting_type(name: str) -> Callable[[str], Any]:
    """An argparse ``type`` that checks an option with the parser of config setting ``name``.

    The option and its ``MIGRATEKIT_<NAME>`` variable accept exactly the same values; a bad
    value reads ``argument --window: must be at most 256, got 999``.
    """
    from ..config import SETTINGS

    parse = next(s.parse for s in SETTINGS if s.name == name)

    def _check(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    _check.__name__ = name.lower()
    return _check


def add_tuning_options(parser: argparse.ArgumentParser) -> None:
    """Options every copying command takes (defaults come from the config settings)."""
    group = parser.add_argument_group("tuning and output")
    group.add_argument(
        "--connections",
        metavar="N",
        type=setting_type("CONNECTIONS"),
        help="NBD connections per side when both servers allow multi-conn, 1-16 [default 2].",
    )
    group.add_argument(
        "--request-size",
        metavar="BYTES",
        type=setting_type("REQUEST_SIZE"),
        help="Bytes per request, e.g. 1M or 262144 [default 1M].",
    )
    group.add_argument(
        "--window",
        metavar="N",
        type=setting_type("WINDOW"),
        help="Requests in flight per connection, 1-256 [default 16].",
    )
    group.add_argument(
        "--retries",
        metavar="N",
        type=setting_type("RETRIES"),
        help="Reconnect attempts after a dropped connection, 0-100 [default 5].",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=setting_type("TIMEOUT"),
        help="Seconds without an answer before a connection is dead [default 60].",
    )
    group.add_argument(
        "--progress",
        dest="progress_mode",
        default="auto",
        choices=["auto", "bar", "plain", "off"],
        help="Progress on stderr: a bar on a TTY, plain lines otherwise [default auto].",
    )
    group.add_argument(
        "--progress-url",
        metavar="URL",
        help="VMA base URL; updates go to URL/api/v1/progress/JOB_ID/update "
        "with the token from MIGRATEKIT_PROGRESS_TOKEN.",
    )
    group.add_argument(
        "--bandwidth-limit",
        metavar="RATE",
        type=bandwidth_rate,
        help="Bytes per second shared by every connection, e.g. 50M (50 MiB/s); 0 = unlimited.",
    )
    group.add_argument(
        "--bandwidth-file",
        metavar="FILE",
        help='JSON {"limit_bps": N or null} re-read every progress interval (changes the '
        "limit while copying; a missing file means --bandwidth-limit).",
    )
    group.add_argument("--job-id", help="Job id used in progress URLs.")
    group.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR [default INFO].")
    group.add_argument("--debug", action="store_true", help="Show tracebacks on errors.")


def bandwidth_rate(text: str) -> int:
    """An argparse ``type`` for ``--bandwidth-limit``: bytes/s with K/M/G (binary) suffixes."""
    from ..config import parse_size

    if str(text).strip() == "0":
        return 0
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bandwidth(
    params: dict[str, Any],
    options: CopyOptions,
    hub: ProgressHub,
    limit_file: str | None = None,
) -> None:
    """With ``--bandwidth-limit``, ``--bandwidth-file`` or a plan's ``bandwidth_file``: one
    token bucket shared by every connection of the job, its file polled every progress
    tick and its limit reported with each update. Without any, no bucket at all."""
    from pathlib import Path

    from ..copy._throttle import LimitFile, TokenBucket

    path = params.get("bandwidth_file") or limit_file
    rate = params.get("bandwidth_limit")
    if path is None and rate is None:
        return
    bucket = TokenBucket(rate)
    options.throttle = bucket
    hub.limit = lambda: bucket.rate
    if path:
        watcher = LimitFile(Path(path), bucket)
        watcher.poll()
        hub.on_tick.append(watcher.poll)


def start(
    params: dict[str, Any], debug: _exit.Debug
) -> tuple[dict[str, Any], CopyOptions, StopSignals]:
    """Config (env + CLI), logging, the debug flag, and copy options that SIGTERM/SIGINT stop."""
    from migration_common import register_secret, setup_logging

    from ..config import load_config
    from ..copy import CopyOptions
    from ..nbd._tls import tls_settings

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
        checkpoint_interval=float(config["CHECKPOINT_INTERVAL"]),
        tls=tls_settings(config),
    )
    setup_logging(str(config["LOG_LEVEL"]), stream=sys.stderr)
    register_secret(config.get("PROGRESS_TOKEN"))
    debug.on = debug.on or bool(config["DEBUG"])
    stop = StopSignals()
    options.stop = stop.event
    return config, options, stop


@contextlib.contextmanager
def progress(
    config: dict[str, Any], params: dict[str, Any], job_id: str | None
) -> Iterator[ProgressHub]:
    """A started progress hub with the sinks the options ask for; closed (final updates
    sent) when the block ends."""
    from ..errors import UsageError
    from ..progress import BarSink, HttpProgressSink, PlainSink, ProgressHub

    mode, progress_url = params["progress_mode"], params["progress_url"]
    sinks: list[Any] = []
    if progress_url:
        if not progress_url.startswith(("http://", "https://")):
            raise UsageError(f"must be an http(s) URL, got {progress_url!r}", "--progress-url")
        if not job_id:
            raise UsageError(
                "--progress-url needs a job id (--job-id or the plan's job_id)", "--job-id"
            )
        sinks.append(
            HttpProgressSink(
                progress_url,
                job_id,
                config.get("PROGRESS_TOKEN"),
                verify=config.get("PROGRESS_CA_FILE") or True,
            )
        )
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        sinks.append(BarSink())
    elif mode == "plain" or mode == "auto":
        sinks.append(PlainSink())
    hub = ProgressHub(sinks, interval=config["PROGRESS_INTERVAL"]).start()
    try:
        yield hub
    finally:
        hub.close()


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
