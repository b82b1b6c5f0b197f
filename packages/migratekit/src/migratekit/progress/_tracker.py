"""Per-disk progress counters and the hub that turns them into progress updates.

Copy workers call :meth:`DiskTracker.add` from several threads; the hub publishes a
:class:`DiskUpdate` (the contract's ``DiskProgress``) to every sink at most once per
``interval`` per disk (from its ticker thread) and immediately on every phase or status
change. ``seq`` increases per disk. Sinks must never block the caller: they queue or drop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from .._states import COMPLETED, COPY, DONE, QUEUED, RUNNING
from ._update import DiskUpdate, now


class ProgressSink(Protocol):
    """Somewhere progress updates go (HTTP, terminal)."""

    def offer(self, update: DiskUpdate) -> None:
        """Take an update without blocking (queue, coalesce or drop)."""

    def close(self) -> None:
        """Deliver what must be delivered (final updates), then stop."""


class DiskTracker:
    """Thread-safe progress counters of one disk sync."""

    def __init__(
        self, hub: ProgressHub, disk_key: str, sync_type: str, change_id: str | None = None
    ) -> None:
        self.hub = hub
        self.disk_key = disk_key
        self.sync_type = sync_type
        self.change_id = change_id
        self.phase = COPY
        self.status = QUEUED
        self.error: str | None = None
        self.bytes_total = 0
        self.bytes_done = 0
        self.bytes_written = 0
        self.bytes_zeroed = 0
        self.bytes_read = 0
        self.digests: tuple[str, str] | None = None  # (source, target) sha256 once verified
        self.started: float | None = None
        self.finished: float | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self._last_published = -1

    # -- counters (called by workers) --------------------------------------------------------
    def set_total(self, total: int) -> None:
        """Set what this sync must move (allocated or changed bytes)."""
        with self._lock:
            self.bytes_total = total

    def add(self, length: int, zero: bool, redo: bool = False) -> None:
        """Count one finished request; a ``redo`` (re-sent after a reconnect) counts once."""
        with self._lock:
            if redo:
                return
            self.bytes_done += length
            if zero:
                self.bytes_zeroed += length
            else:
                self.bytes_written += length

    def add_read(self, length: int) -> None:
        """Count bytes read from the source."""
        with self._lock:
            self.bytes_read += length

    # -- state changes (published at once) ---------------------------------------------------
    def start(self) -> None:
        """The sync is running (phase copy)."""
        self.started = time.monotonic()
        self.status = RUNNING
        self.hub.publish(self, force=True)

    def set_phase(self, phase: str) -> None:
        """Enter a new phase and publish it."""
        self.phase = phase
        self.hub.publish(self, force=True)

    def set_digests(self, source: str, target: str) -> None:
        """Record the verification's sha256 of source and target (published with the next
        update, the final one)."""
        self.digests = (source, target)

    def finish(self, status: str, error: str | None = None) -> None:
        """Final state: completed (phase done) or failed (phase where it stopped)."""
        self.finished = time.monotonic()
        if status == COMPLETED:
            self.phase = DONE
        self.error = error
        self.status = status
        self.hub.publish(self, force=True)

    # -- views ---------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """Time since start (until finish)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    @property
    def throughput_bps(self) -> float:
        """Average bytes per second moved since start."""
        secs = self.seconds
        return self.bytes_done / secs if secs > 0 else 0.0

    def snapshot(self) -> DiskUpdate:
        """The next update (increments seq)."""
        with self._lock:
            self._seq += 1
            done = min(self.bytes_done, self.bytes_total)
            return DiskUpdate(
                disk_key=self.disk_key,
                sync_type=self.sync_type,
                phase=self.phase,
                status=self.status if self.status != QUEUED else RUNNING,
                bytes_total=self.bytes_total,
                bytes_done=done,
                bytes_written=min(self.bytes_written, done),
                bytes_zeroed=min(self.bytes_zeroed, done - min(self.bytes_written, done)),
                throughput_bps=round(self.throughput_bps, 1),
                change_id=self.change_id if self.status == COMPLETED else None,
                error=self.error,
                seq=self._seq,
                verified=None if self.digests is None else self.digests[0] == self.digests[1],
                source_sha256=self.digests[0] if self.digests else None,
                target_sha256=self.digests[1] if self.digests else None,
                limit_bps=self.hub.limit() if self.hub.limit is not None else None,
                sent_at=now(),
            )

    def changed_since_publish(self) -> bool:
        """True when counters moved since the last published update."""
        return self.bytes_done != self._last_published

    def mark_published(self) -> None:
        """Remember the counters of the last update."""
        self._last_published = self.bytes_done


class ProgressHub:
    """Publishes every disk's progress to the sinks, rate-limited per disk.

    ``limit``, when set, returns the job's bandwidth limit in force (bytes/s or None), sent
    as ``limit_bps`` with every update. ``on_tick`` callables run at the start of every tick,
    before the updates are published (the bandwidth limit file is read there).
    """

    def __init__(self, sinks: list[ProgressSink] | None = None, interval: float = 1.0) -> None:
        self.sinks = list(sinks or [])
        self.interval = interval
        self.limit: Callable[[], int | None] | None = None
        self.on_tick: list[Callable[[], object]] = []
        self._trackers: list[DiskTracker] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tracker(self, disk_key: str, sync_type: str, change_id: str | None = None) -> DiskTracker:
        """A new tracker for one disk."""
        t = DiskTracker(self, disk_key, sync_type, change_id)
        with self._lock:
            self._trackers.append(t)
        return t

    def publish(self, tracker: DiskTracker, force: bool = False) -> None:
        """Send the tracker's state to every sink (serialised so seq order is kept)."""
        if not self.sinks:
            return
        with self._lock:
            if not force and not tracker.changed_since_publish():
                return
            update = tracker.snapshot()
            tracker.mark_published()
            for sink in self.sinks:
                sink.offer(update)

    def start(self) -> ProgressHub:
        """Start the ticker that publishes running disks every ``interval`` seconds."""
        self._thread = threading.Thread(target=self._tick, name="progress-ticker", daemon=True)
        self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            for hook in self.on_tick:
                hook()
            with self._lock:
                running = [t for t in self._trackers if t.status == RUNNING]
            for t in running:
                self.publish(t)

    def close(self) -> None:
        """Stop the ticker and close the sinks (they deliver final updates)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for sink in self.sinks:
            sink.close()
