"""Terminal progress: a redrawn bar per disk on a TTY, plain one-line updates elsewhere.

Both write to stderr (stdout carries the summary and ``--json``). Plain lines are
``progress disk=2000 phase=copy status=running done=... total=... percent=... rate=...`` at
most once a second per disk (the hub's rate) and at each phase or status change.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ._update import DiskUpdate


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class PlainSink:
    """Prints one parseable line per update."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def offer(self, update: DiskUpdate) -> None:
        """Print the update as one line."""
        line = (
            f"progress disk={update.disk_key} phase={update.phase} status={update.status} "
            f"done={update.bytes_done} total={update.bytes_total} "
            f"percent={update.percent:.1f} rate_bps={update.throughput_bps:.0f} "
            f"seq={update.seq}"
        )
        with self._lock:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Nothing to flush."""


class BarSink:
    """Redraws one bar line per disk (ANSI cursor movement) on a terminal."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._rows: dict[str, str] = {}
        self._drawn = 0
        self._lock = threading.Lock()

    def _row(self, u: DiskUpdate) -> str:
        fill = int(self.WIDTH * u.percent / 100)
        bar = "#" * fill + "-" * (self.WIDTH - fill)
        eta = ""
        if u.throughput_bps > 0 and not u.status.is_terminal:
            eta = f" eta {int((u.bytes_total - u.bytes_done) / u.throughput_bps)}s"
        return (
            f"disk {u.disk_key:<8} [{bar}] {u.percent:5.1f}% "
            f"{human_bytes(u.bytes_done)}/{human_bytes(u.bytes_total)} "
            f"{human_bytes(u.throughput_bps)}/s {u.phase}/{u.status}{eta}"
        )

    def offer(self, update: DiskUpdate) -> None:
        """Redraw all bars with this update."""
        with self._lock:
            self._rows[update.disk_key] = self._row(update)
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F")
            for row in self._rows.values():
                self.stream.write("\x1b[2K" + row + "\n")
            self._drawn = len(self._rows)
            self.stream.flush()

    def close(self) -> None:
        """Leave the last bars on screen."""
