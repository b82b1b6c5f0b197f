"""Bandwidth limit: one token bucket shared by every copy connection of a job.

A worker calls :meth:`TokenBucket.take` with the size of each data request before sending
it. Tokens (bytes) refill at ``rate`` per second up to a small burst; a request may take the
bucket into debt and its worker then waits until the debt is repaid, so a request larger than
the burst still goes through and the long-run rate is exactly ``rate``. ``rate`` None means
unlimited: :meth:`take` returns at once without taking the lock, and the engine skips the
call entirely when no bucket is configured, so unlimited copies pay nothing.

The rate changes at run time (:meth:`set_rate`): waiting workers are woken and re-evaluate
with the new rate. :class:`LimitFile` reads a small JSON file (``{"limit_bps": N | null}``, written
atomically by the VMA) on every progress tick and applies what it says.

The clock and the wait are injectable, so tests drive the bucket without wall-clock time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .._log import get_logger

log = get_logger(__name__)

BURST_SECONDS = 0.25
"""Tokens saved while idle, in seconds of the current rate: enough that a worker woken late
(a busy host) catches up, small enough that a limited copy never runs ahead of its rate by
more than a quarter of a second's worth of bytes."""

MIN_BURST = 64 * 1024
"""The smallest burst in bytes (a very low rate still sends whole requests smoothly)."""

MAX_WAIT = 0.25
"""Longest single wait, in seconds, before a worker re-checks ``stop`` and the rate."""


class TokenBucket:
    """A thread-safe token bucket in bytes per second; ``rate`` None is unlimited.

    ``clock`` returns seconds (monotonic); ``wait(cond, seconds)`` waits on the bucket's
    condition (default: ``cond.wait``). The bucket starts empty, so a copy that starts limited
    does not begin with a burst.
    """

    def __init__(
        self,
        rate: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Condition, float], object] | None = None,
    ) -> None:
        self._clock = clock
        self._wait = wait or (lambda cond, seconds: cond.wait(seconds))
        self._cond = threading.Condition()
        self._rate: int | None = None
        self._tokens = 0.0
        self._stamp = clock()
        self.set_rate(rate)

    @property
    def rate(self) -> int | None:
        """Bytes per second, or None when unlimited."""
        return self._rate

    def set_rate(self, rate: int | None) -> None:
        """Change the limit (None or 0: unlimited) and wake the waiting workers."""
        if rate is not None and rate < 0:
            raise ValueError(f"rate must be >= 0 bytes/s, got {rate}")
        with self._cond:
            self._refill()
            new = rate or None
            if new is not None and self._rate is None:
                self._tokens = 0.0  # start limiting without a saved-up burst
            self._rate = new
            self._tokens = min(self._tokens, self._burst())
            self._cond.notify_all()

    def _burst(self) -> float:
        if self._rate is None:
            return 0.0
        return max(self._rate * BURST_SECONDS, MIN_BURST)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self._burst(), self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until the debt is repaid at the current rate (0: a request may go)."""
        with self._cond:
            self._refill()
            if self._rate is None or self._tokens >= 0:
                return 0.0
            return -self._tokens / self._rate

    def take(self, nbytes: int, stopping: Callable[[], bool] | None = None) -> None:
        """Take ``nbytes``; block while the bucket is in debt (until repaid, the limit is
        lifted, or ``stopping()`` is true)."""
        if self._rate is None:
            return
        with self._cond:
            self._refill()
            if self._rate is None:
                return
            self._tokens -= nbytes
            while True:
                if self._rate is None:
                    self._tokens = 0.0
                    return
                if self._tokens >= 0 or (stopping is not None and stopping()):
                    return
                self._wait(self._cond, min(-self._tokens / self._rate, MAX_WAIT))
                self._refill()


def read_limit(path: Path) -> int | None:
    """The ``limit_bps`` of a limit file: bytes/s, or None when unlimited.

    Raises ValueError for a file that is not ``{"limit_bps": <integer >= 0 or null>}``
    (0 means unlimited) and OSError when it cannot be read.
    """
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "limit_bps" not in data:
        raise ValueError('expected {"limit_bps": <bytes per second or null>}')
    value = data["limit_bps"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"limit_bps must be an integer >= 0 or null, got {value!r}")
    return value or None


class LimitFile:
    """Applies a limit file to a bucket each time :meth:`poll` is called (at start and on
    every progress tick, so a new limit is in force within one progress interval).

    A missing file means ``default`` (the bucket's rate when the poller was made). A file
    that cannot be parsed keeps the current limit (logged once per distinct error), so a
    damaged file never lifts a limit.
    """

    def __init__(self, path: Path, bucket: TokenBucket) -> None:
        self.path = path
        self.bucket = bucket
        self.default = bucket.rate
        self._last_error: str | None = None

    def poll(self) -> int | None:
        """Read the file once and apply it; return the limit now in force."""
        try:
            rate = read_limit(self.path)
        except FileNotFoundError:
            rate = self.default
        except (OSError, ValueError, RecursionError) as exc:
            error = str(exc)
            if error != self._last_error:
                log.warning("bandwidth limit file ignored", path=str(self.path), error=error)
                self._last_error = error
            return self.bucket.rate
        self._last_error = None
        if rate != self.bucket.rate:
            log.info("bandwidth limit changed", limit_bps=rate, previous=self.bucket.rate)
            self.bucket.set_rate(rate)
        return rate
