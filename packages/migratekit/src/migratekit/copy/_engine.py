"""The pipelined copy engine: N workers, each one source and one target connection.

Each worker keeps up to ``window`` reads in flight on its source connection and up to
``window`` writes in flight on its target connection, in one thread: it receives a read reply
straight into its buffer and sends it on as a write (the kernel has copied the bytes when
``sendmsg`` returns, so one buffer per worker is enough). Writes only return 16-byte replies
and reads are only 28-byte requests, so neither server can block on us while we block on the
other: the pipeline cannot deadlock.

Retries: when a connection drops or times out, the worker reconnects (bounded, with backoff)
and re-sends every request that had not been acknowledged. When the *target* connection was
lost, writes it acknowledged but never flushed are re-sent as well, since a restarted server
may have lost them. Every worker flushes its own target connection at the end (a flush covers
only its connection unless the server advertises multi-conn).

Durable progress (for checkpoints): requests leave the shared stream in offset order, so the
*safe offset* — below it every request was written and flushed — is the lowest of: the end of
the last request handed out, the requests handed back by a worker that gave up, and each
worker's lowest request not yet covered by one of its answered flushes (recomputed when a
flush is answered, lowered when the worker takes a request). ``on_durable`` is called after
every answered flush, from the worker's thread; it must not block.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from .._log import get_logger
from ..errors import (
    CopyError,
    CopyStopped,
    NbdCommandError,
    NbdConnectionError,
    NbdError,
    NbdHandshakeError,
)
from ..nbd import NbdClient
from ..nbd import _protocol as p
from ..nbd._splice import SplicePipe, Unsupported, relay, splice_available
from ..progress._tracker import DiskTracker
from ._extents import ZERO_STEP, split
from ._throttle import BURST_SECONDS, TokenBucket

#: (offset, length, zero, redo) — ``redo`` requests were counted once already.
Chunk = tuple[int, int, bool, bool]
#: In ``writes``: an outstanding periodic FLUSH. In ``completed``: where that flush was sent
#: (everything before it is durable once the flush is answered).
_FLUSH: Chunk = (-1, 0, False, True)


class _FlushState:
    """Per-pipeline bookkeeping of the periodic flush."""

    __slots__ = ("answered", "at", "in_flight", "since")

    def __init__(self) -> None:
        self.in_flight = False
        self.answered = False  # a periodic flush was answered: recompute the worker's low
        self.since = 0
        self.at = time.monotonic()


log = get_logger(__name__)

#: A worker's low when it holds no request that is not yet flushed.
_NONE = 1 << 63


class EngineOptions:
    """Tuning of one disk copy (keyword arguments; a plain class, see the README on start-up).

    ``stop`` is set by a signal handler: workers stop taking requests and the disk ends
    ``stopped``. ``throttle`` (a :class:`~._throttle.TokenBucket` shared by every disk and
    connection of a job) limits the bytes sent; None skips it entirely. ``splice`` relays
    read data to the target with splice(2) (Linux), never through Python buffers.
    ``flush_every`` flushes each target connection after that many bytes (0: only at the
    end), which bounds what must be re-sent when a target server restarts mid-copy.
    """

    __slots__ = (
        "connections",
        "flush_every",
        "request_size",
        "retries",
        "retry_delay",
        "splice",
        "stop",
        "throttle",
        "timeout",
        "window",
    )

    def __init__(
        self,
        *,
        connections: int = 2,
        request_size: int = 1 << 20,
        window: int = 16,
        retries: int = 5,
        retry_delay: float = 0.5,
        timeout: float | None = 60.0,
        stop: threading.Event | None = None,
        splice: bool = True,
        flush_every: int = 1 << 30,
        throttle: TokenBucket | None = None,
    ) -> None:
        self.connections = connections
        self.request_size = request_size
        self.window = window
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.stop = stop
        self.splice = splice
        self.flush_every = flush_every
        self.throttle = throttle


class _Side(Exception):
    """Wraps a connection error with which side failed."""

    def __init__(self, exc: NbdError, target: bool) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.target = target


class _Idle(Exception):
    """A worker with nothing to do could not connect after the others finished."""


class CopyEngine:
    """Copies a stream of (offset, length, zero) requests with pipelined workers.

    ``start``: everything below it is already on the target (a resumed copy).
    ``flush_interval`` (seconds, 0: never) also flushes a connection that wrote something and
    was last flushed that long ago, so a checkpoint advances on a slow copy too.
    """

    def __init__(
        self,
        connect_source: Callable[[], NbdClient],
        connect_target: Callable[[], NbdClient],
        chunks: Iterator[tuple[int, int, bool]],
        tracker: DiskTracker,
        options: EngineOptions,
        *,
        disk_key: str,
        request_size: int,
        can_zero: bool,
        workers: int,
        start: int = 0,
        on_durable: Callable[[], None] | None = None,
        flush_interval: float = 0.0,
    ) -> None:
        self.connect_source = connect_source
        self.connect_target = connect_target
        self._chunks = chunks
        self._lock = threading.Lock()
        self.tracker = tracker
        self.options = options
        self.disk_key = disk_key
        self.request_size = request_size
        self.can_zero = can_zero
        # Without WRITE_ZEROES, zero runs are sent as data from a request_size zero buffer.
        self.zero_step = ZERO_STEP if can_zero else request_size
        self.workers = max(1, workers)
        self._failure: BaseException | None = None
        self._cancel = threading.Event()
        self._returned: deque[Chunk] = deque()
        self._alive = 0
        self._finished = False
        self.reconnects = 0
        self.use_splice = options.splice and splice_available()
        # durable progress: see the module docstring
        self._issued_end = start
        self._low = [_NONE] * self.workers
        self.on_durable = on_durable
        self.flush_interval = flush_interval

    def safe_offset(self) -> int:
        """Offset below which every request was written and flushed (thread-safe)."""
        with self._lock:
            low = min(self._issued_end, *self._low)
            if self._returned:
                low = min(low, min(c[0] for c in self._returned))
            return low

    def _durable(self, index: int, *held: Iterable[Chunk]) -> None:
        """A flush of worker ``index`` was answered: its low is now its lowest held request."""
        low = min((c[0] for group in held for c in group if c[0] >= 0), default=_NONE)
        self._low[index] = low
        if self.on_durable is not None:
            self.on_durable()

    def _stopping(self) -> bool:
        stop = self.options.stop
        return self._cancel.is_set() or (stop is not None and stop.is_set())

    def _take(self, index: int) -> Chunk | None:
        if self._stopping():
            return None
        with self._lock:
            if self._returned:
                chunk = self._returned.popleft()
            else:
                nxt = next(self._chunks, None)
                if nxt is None:
                    return None
                chunk = (nxt[0], nxt[1], nxt[2], False)
                self._issued_end = nxt[0] + nxt[1]
            if chunk[0] < self._low[index]:
                self._low[index] = chunk[0]
        return chunk

    def run(self, first_target: NbdClient | None = None) -> None:
        """Copy everything; raise CopyError (first failure) when the last worker gives up."""
        threads = []
        self._alive = self.workers
        for i in range(self.workers):
            tgt = first_target if i == 0 else None
            t = threading.Thread(
                target=self._worker, args=(i, tgt), name=f"copy-{self.disk_key}-{i}", daemon=True
            )
            threads.append(t)
            t.start()
        for t in threads:
            t.join()
        if self._failure is not None:
            raise self._failure
        if self.options.stop is not None and self.options.stop.is_set():
            raise CopyStopped("stopped before the copy finished", disk_key=self.disk_key)

    # -- one worker -----------------------------------------------------------------------------
    def _worker(self, index: int, target: NbdClient | None) -> None:
        src: NbdClient | None = None
        tgt = target
        pending: deque[Chunk] = deque()
        completed: list[Chunk] = []
        reads: dict[int, Chunk] = {}
        writes: dict[int, Chunk] = {}
        attempts = 0
        last_offset = 0
        try:
            while True:
                try:
                    if src is None:
                        src = self._connect(self.connect_source, False, not pending)
                    if tgt is None:
                        tgt = self._connect(self.connect_target, True, not pending)
                    self._pump(index, src, tgt, pending, completed, reads, writes)
                    try:
                        tgt.flush()
                    except NbdConnectionError as exc:
                        raise _Side(exc, True) from exc
                    completed.clear()
                    self._durable(index)
                    with self._lock:
                        if self._returned and not self._stopping():
                            continue  # a worker that gave up handed work back
                        self._alive -= 1
                        self._finished = True
                    for c in (src, tgt):  # every request was answered: no need to wait
                        c.close(idle=True)
                    src = tgt = None
                    return
                except _Idle:
                    with self._lock:
                        self._alive -= 1
                    return
                except _Side as side:
                    if self._stopping():
                        return
                    attempts += 1
                    target_lost = side.target
                    if not target_lost and tgt is not None:
                        # Only the source failed: make what the target acknowledged durable
                        # on this connection before it is replaced (without multi-conn a
                        # flush on a new connection need not cover the old one's writes).
                        target_lost = not self._settle(tgt, writes, completed)
                    in_flight = sorted(
                        c for c in (*reads.values(), *writes.values(), *pending) if c[0] >= 0
                    )
                    if in_flight:
                        last_offset = in_flight[0][0]
                    # The side that failed is dropped; the other one may still have requests in
                    # flight and is closed the protocol's way (see NbdClient.close).
                    for c, healthy in ((src, side.target), (tgt, not target_lost)):
                        if c is not None and healthy:
                            c.close(min(2.0, self.options.timeout or 2.0))
                        elif c is not None:
                            c.abort()
                    src = tgt = None
                    redo = in_flight
                    if target_lost:
                        again = split(
                            [(o, n, z) for o, n, z, _ in completed],
                            self.request_size,
                            self.zero_step,
                        )
                        redo = sorted([(o, n, z, True) for o, n, z in again] + redo)
                        completed.clear()
                    reads.clear()
                    writes.clear()
                    pending.clear()
                    if attempts > self.options.retries:
                        with self._lock:
                            if self._alive > 1:
                                # Others are still copying: hand the work over, leave quietly.
                                self._returned.extend(redo)
                                self._low[index] = _NONE  # what it held is in _returned now
                                self._alive -= 1
                                log.warning(
                                    "copy worker gave up; others continue",
                                    disk_key=self.disk_key,
                                    worker=index,
                                    error=str(side.exc),
                                )
                                return
                            if self._finished and not redo and not self._returned:
                                # e.g. a server that refuses extra connections: the others
                                # already copied everything.
                                self._alive -= 1
                                return
                        raise CopyError(
                            f"gave up after {self.options.retries} reconnects, copying at offset "
                            f"{last_offset}: {side.exc}",
                            disk_key=self.disk_key,
                            offset=last_offset,
                        ) from side.exc
                    pending.extend(redo)
                    self.reconnects += 1
                    time.sleep(min(self.options.retry_delay * (2 ** (attempts - 1)), 5.0))
        except BaseException as exc:
            self._cancel.set()
            with self._lock:
                if self._failure is None:
                    if isinstance(exc, NbdError) and not isinstance(exc, CopyError):
                        exc = CopyError(
                            str(exc), disk_key=self.disk_key, offset=getattr(exc, "offset", None)
                        )
                    self._failure = exc
        finally:
            for c in (src, tgt):
                if c is not None:
                    c.close()

    def _settle(self, tgt: NbdClient, writes: dict[int, Chunk], completed: list[Chunk]) -> bool:
        """Collect the target's outstanding replies and flush; False if the target failed."""
        try:
            while writes:
                self._reap(tgt, writes, completed)
            tgt.flush()
        except _Side:
            return False
        except NbdConnectionError:
            return False
        completed.clear()  # durable now: a later target failure need not resend these
        return True

    def _connect(self, factory: Callable[[], NbdClient], target: bool, idle: bool) -> NbdClient:
        try:
            return factory()
        except NbdConnectionError as exc:
            raise _Side(exc, target) from exc
        except NbdHandshakeError as exc:
            # A server at its client limit may refuse the handshake (nbdkit's limit filter
            # answers "export not found"). That is fatal only for the last worker with work.
            with self._lock:
                if idle and self._finished and not self._returned:
                    raise _Idle from exc
                if self._alive > 1:
                    raise _Side(exc, target) from exc
            raise

    def _pump(
        self,
        index: int,
        src: NbdClient,
        tgt: NbdClient,
        pending: deque[Chunk],
        completed: list[Chunk],
        reads: dict[int, Chunk],
        writes: dict[int, Chunk],
    ) -> None:
        """Run the pipeline until every request is acknowledged (a fresh pipe per run)."""
        pipe = SplicePipe() if self.use_splice else None
        try:
            self._pipeline(index, src, tgt, pending, completed, reads, writes, pipe)
        finally:
            if pipe is not None:
                pipe.close()

    def _pipeline(
        self,
        index: int,
        src: NbdClient,
        tgt: NbdClient,
        pending: deque[Chunk],
        completed: list[Chunk],
        reads: dict[int, Chunk],
        writes: dict[int, Chunk],
        pipe: SplicePipe | None,
    ) -> None:
        buf = bytearray(self.request_size)
        view = memoryview(buf)
        zeros = memoryview(bytes(self.request_size)) if not self.can_zero else None
        window = self.options.window
        throttle = self.options.throttle
        tracker = self.tracker
        exhausted = False
        first_relay = True
        flush = _FlushState()
        can_flush = tgt.info.can_flush
        flush_every = self.options.flush_every if can_flush else 0
        flush_interval = self.flush_interval if can_flush else 0.0
        while True:
            while not exhausted and len(reads) < window and len(writes) < window:
                chunk = pending.popleft() if pending else self._take(index)
                if chunk is None:
                    exhausted = True
                    break
                offset, length, zero, _ = chunk
                rate = throttle.rate if throttle is not None else None
                if rate is not None and (zeros is not None or not zero):
                    # Data crosses the network: pay for it. A limited worker keeps only
                    # about a burst's worth of requests in flight, so answers are collected
                    # (and counted: progress shows what was really sent) between waits.
                    depth = max(2, min(window, int(rate * BURST_SECONDS) // length))
                    if len(reads) + len(writes) >= depth:
                        pending.appendleft(chunk)
                        break
                    throttle.take(length, self._stopping)
                if zero:
                    try:
                        handle = tgt.next_handle()
                        if zeros is None:
                            tgt.send_command(p.CMD_WRITE_ZEROES, handle, offset, length)
                        elif length <= len(zeros):
                            tgt.send_write(handle, offset, zeros[:length])
                        else:  # never send a header promising more bytes than follow
                            raise CopyError(
                                f"zero request of {length} bytes exceeds the zero buffer",
                                disk_key=self.disk_key,
                                offset=offset,
                            )
                    except NbdConnectionError as exc:
                        pending.appendleft(chunk)
                        raise _Side(exc, True) from exc
                    writes[handle] = chunk
                else:
                    try:
                        handle = src.next_handle()
                        src.send_read(handle, offset, length)
                    except NbdConnectionError as exc:
                        pending.appendleft(chunk)
                        raise _Side(exc, False) from exc
                    reads[handle] = chunk
            if reads:
                try:
                    error, handle = src.recv_simple()
                    chunk = reads.pop(handle, None)
                    if chunk is None:
                        raise CopyError(
                            f"source answered unknown handle {handle}", disk_key=self.disk_key
                        )
                    offset, length = chunk[0], chunk[1]
                    if error:
                        raise NbdCommandError(
                            f"read failed: {p.errno_text(error)}",
                            errno=error,
                            server=src.server,
                            offset=offset,
                        )
                    if pipe is None:
                        data = view[:length]
                        src.recv_into(data)
                except NbdConnectionError as exc:
                    raise _Side(exc, False) from exc
                tracker.add_read(length)
                handle = tgt.next_handle()
                writes[handle] = chunk
                if pipe is not None:
                    try:
                        tgt.send_write_header(handle, offset, length)
                    except NbdConnectionError as exc:
                        raise _Side(exc, True) from exc
                    try:
                        relay(src, tgt, length, pipe, first=first_relay)
                        first_relay = False
                    except Unsupported:
                        log.info(
                            "splice not supported here; relaying through a buffer",
                            disk_key=self.disk_key,
                        )
                        self.use_splice = False
                        pipe = None
                        try:
                            data = view[:length]
                            src.recv_into(data)
                        except NbdConnectionError as exc:
                            raise _Side(exc, True) from exc  # the target awaits a payload
                        try:
                            tgt.send_raw(data)
                        except NbdConnectionError as exc:
                            raise _Side(exc, True) from exc
                    except NbdConnectionError as exc:
                        # Both streams stop mid-message: drop both, resend what is unflushed.
                        raise _Side(exc, True) from exc
                else:
                    try:
                        tgt.send_write(handle, offset, data)
                    except NbdConnectionError as exc:
                        raise _Side(exc, True) from exc
            elif writes:
                self._reap(tgt, writes, completed, flush)
            elif exhausted:
                return
            while True:  # reap while the window is full or at the end; flush on the way
                if flush.answered:
                    flush.answered = False
                    self._durable(index, reads.values(), writes.values(), pending, completed)
                if not flush.in_flight and (
                    (flush_every and flush.since >= flush_every)
                    or (
                        flush_interval
                        and flush.since
                        and time.monotonic() - flush.at >= flush_interval
                    )
                ):
                    try:
                        handle = tgt.next_handle()
                        tgt.send_command(p.CMD_FLUSH, handle, 0, 0)
                    except NbdConnectionError as exc:
                        raise _Side(exc, True) from exc
                    writes[handle] = _FLUSH
                    completed.append(_FLUSH)
                    flush.in_flight, flush.since, flush.at = True, 0, time.monotonic()
                if not (len(writes) >= window or (writes and not reads and exhausted)):
                    break
                self._reap(tgt, writes, completed, flush)

    def _reap(
        self,
        tgt: NbdClient,
        writes: dict[int, Chunk],
        completed: list[Chunk],
        flush: _FlushState | None = None,
    ) -> None:
        try:
            error, handle = tgt.recv_simple()
        except NbdConnectionError as exc:
            raise _Side(exc, True) from exc
        chunk = writes.pop(handle, None)
        if chunk is None:
            raise CopyError(f"target answered unknown handle {handle}", disk_key=self.disk_key)
        if chunk is _FLUSH:
            if error:
                raise NbdCommandError(
                    f"flush failed: {p.errno_text(error)}", errno=error, server=tgt.server
                )
            del completed[: completed.index(_FLUSH) + 1]  # durable: never re-sent
            if flush is not None:
                flush.in_flight = False
                flush.answered = True
            return
        offset, length, zero, redo = chunk
        if flush is not None:
            flush.since += length
        if error:
            what = "write-zeroes" if zero and self.can_zero else "write"
            raise NbdCommandError(
                f"{what} failed: {p.errno_text(error)}",
                errno=error,
                server=tgt.server,
                offset=offset,
            )
        self.tracker.add(length, zero, redo)
        if completed and completed[-1][0] + completed[-1][1] == offset and completed[-1][2] == zero:
            last = completed[-1]
            completed[-1] = (last[0], last[1] + length, zero, False)
        else:
            completed.append((offset, length, zero, False))
