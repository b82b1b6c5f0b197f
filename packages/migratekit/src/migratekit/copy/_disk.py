"""Copy one disk: plan from the source's extents, copy pipelined, flush, verify, report.

Order of work (each step's connection is closed before the next one opens, so servers that
serve a single client at a time still work):

1. planning connection to the source (structured replies, ``base:allocation`` and, for a
   bitmap incremental, ``qemu:dirty-bitmap:NAME``): size, allocation map, changed ranges;
2. a target connection: size check (target ≥ source), writable, zero support;
3. the copy engine (1 worker, or ``connections`` workers when both servers advertise
   multi-conn), every worker flushing its target connection at the end;
4. optional verification: sha256 of source and target over the copied ranges (full copy:
   the whole source size).

A full copy with a checkpoint file records how far it has safely reached
(:mod:`._checkpoint`); with ``resume`` it starts from a matching checkpoint's offset.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

from .._log import get_logger
from .._states import COMPLETED, FAILED, FULL, RUNNING, STOPPED, VERIFY
from ..errors import (
    CopyError,
    CopyStopped,
    MigrateKitError,
    NbdHandshakeError,
    TargetTooSmallError,
    UsageError,
    VerifyError,
)
from ..nbd import NbdClient, NbdUri
from ..nbd import _protocol as p
from ..nbd._tls import TlsSettings
from ..progress._tracker import DiskTracker
from . import _extents as ext
from ._checkpoint import Checkpointer, resume_offset
from ._engine import CopyEngine, EngineOptions

log = get_logger(__name__)


class DiskSpec(NamedTuple):
    """What to copy for one disk (one entry of a plan, or the ``copy`` command's arguments)."""

    disk_key: str
    source: NbdUri
    target: NbdUri
    mode: str = FULL
    target_is_zero: bool = False
    changed_extents: list[tuple[int, int]] | None = None
    dirty_bitmap: str | None = None
    change_id: str | None = None
    checkpoint: str | None = None  # checkpoint file of a full copy (None: no checkpoints)
    source_id: str | None = None  # source identity in the checkpoint (default: source URI)
    target_id: str | None = None  # target identity in the checkpoint (default: target URI)


class CopyOptions(EngineOptions):
    """Engine tuning plus what to do around the copy: ``verify``, ``coalesce_gap`` (bytes
    of hole between two data extents that are copied as one request), ``resume`` (full
    copies with a checkpoint start from it when it matches) and ``checkpoint_interval``
    (seconds between flushes that let a checkpoint advance; 0: only ``flush_every``).
    ``tls`` holds the files every ``nbds://`` connection uses (None: no TLS configured)."""

    __slots__ = ("checkpoint_interval", "coalesce_gap", "resume", "tls", "verify")

    def __init__(
        self,
        *,
        verify: bool = False,
        coalesce_gap: int = 64 * 1024,
        resume: bool = False,
        checkpoint_interval: float = 30.0,
        tls: TlsSettings | None = None,
        **engine: Any,
    ):
        super().__init__(**engine)
        self.verify = verify
        self.coalesce_gap = coalesce_gap
        self.resume = resume
        self.checkpoint_interval = checkpoint_interval
        self.tls = tls


class DiskResult:
    """The outcome of one disk sync (what ``--report`` and ``--json`` print).

    Counters start at zero and are filled in as the copy goes; :meth:`to_dict` is the JSON.
    """

    __slots__ = (
        "bytes_done",
        "bytes_read",
        "bytes_total",
        "bytes_written",
        "bytes_zeroed",
        "change_id",
        "connections",
        "digest",
        "disk_key",
        "error",
        "extra",
        "reconnects",
        "resumed_from",
        "seconds",
        "status",
        "sync_type",
        "throughput_bps",
        "verify_failed",
        "virtual_size",
    )

    def __init__(
        self, disk_key: str, status: str, sync_type: str, change_id: str | None = None
    ) -> None:
        self.disk_key = disk_key
        self.status = status
        self.sync_type = sync_type
        self.change_id = change_id
        self.bytes_total = self.bytes_done = self.bytes_read = 0
        self.bytes_written = self.bytes_zeroed = self.virtual_size = 0
        self.connections = self.reconnects = 0
        self.resumed_from: int | None = None  # offset a resumed full copy started from
        self.seconds = self.throughput_bps = 0.0
        self.digest: str | None = None
        self.error: str | None = None
        self.verify_failed = False
        self.extra: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"DiskResult({self.to_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "disk_key": self.disk_key,
            "status": str(self.status),
            "sync_type": str(self.sync_type),
            "bytes_total": self.bytes_total,
            "bytes_done": self.bytes_done,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "bytes_zeroed": self.bytes_zeroed,
            "seconds": round(self.seconds, 3),
            "throughput_bps": round(self.throughput_bps, 1),
            "virtual_size": self.virtual_size,
            "resumed_from": self.resumed_from,
            "connections": self.connections,
            "reconnects": self.reconnects,
            "digest": self.digest,
            "change_id": self.change_id,
            "error": self.error,
        }


def _connect(uri: NbdUri, options: CopyOptions, **kw: Any) -> NbdClient:
    return NbdClient(uri, timeout=options.timeout, tls=options.tls, **kw)


def _open_planning(spec: DiskSpec, options: CopyOptions) -> tuple[NbdClient, bool]:
    """The planning connection, and whether it has the ``base:allocation`` map.

    A server without structured replies or ``base:allocation`` (nbd-server, nbdkit --no-sr)
    still works for a full or extent-list copy: every byte is then treated as data.
    """
    contexts = [p.BASE_ALLOCATION]
    if spec.dirty_bitmap:
        contexts.append(p.DIRTY_BITMAP_PREFIX + spec.dirty_bitmap)
    try:
        return _connect(spec.source, options, contexts=contexts), True
    except NbdHandshakeError as exc:
        if spec.dirty_bitmap:
            raise
        client = _connect(spec.source, options)
        log.warning(
            "source has no allocation map: every byte is copied as data",
            disk_key=spec.disk_key,
            reason=exc.reason,
        )
        return client, False


def _plan(
    spec: DiskSpec, options: CopyOptions
) -> tuple[p.ExportInfo, ext.ExtentList, list[ext.Range]]:
    """Return (source export info, extents to process, ranges covered) from its maps."""
    meta, has_map = _open_planning(spec, options)
    with meta:
        size = meta.info.size

        def allocation() -> ext.ExtentList:
            if has_map:
                return ext.allocation(meta, 0, size)
            return ext.ExtentList([(0, size, False)] if size else [])

        if spec.mode == FULL:
            extents = allocation()
            ranges = [(0, size)]
            if spec.target_is_zero:
                extents = ext.ExtentList(e for e in extents if not e[2])
        else:
            if spec.dirty_bitmap:
                ranges = ext.dirty_ranges(meta, spec.dirty_bitmap, size)
            else:
                ranges = ext.merge_ranges(spec.changed_extents or [])
                beyond = [r for r in ranges if r[0] + r[1] > size]
                if beyond:
                    raise UsageError(
                        f"changed extent {list(beyond[0])} ends beyond the source size {size}",
                        "changed_extents",
                    )
            extents = ext.intersect(ranges, allocation()) if ranges else ext.ExtentList()
    return meta.info, ext.coalesce(extents, options.coalesce_gap), ranges


def copy_disk(spec: DiskSpec, options: CopyOptions, tracker: DiskTracker) -> DiskResult:
    """Copy one disk and return its result; failures are reported, never raised."""
    result = DiskResult(
        disk_key=spec.disk_key, status=RUNNING, sync_type=spec.mode, change_id=spec.change_id
    )
    tracker.start()
    dlog = get_logger(__name__, disk_key=spec.disk_key)
    checkpointer: Checkpointer | None = None
    try:
        if options.stop is not None and options.stop.is_set():
            raise CopyStopped("stopped before the copy started", disk_key=spec.disk_key)
        src_info, extents, ranges = _plan(spec, options)
        size = src_info.size
        result.virtual_size = size
        target = _connect(spec.target, options)
        try:
            if target.info.size < size:
                raise TargetTooSmallError(
                    f"target {spec.target} is {target.info.size} bytes, smaller than the "
                    f"source ({size} bytes)",
                    disk_key=spec.disk_key,
                )
            if target.info.read_only:
                raise CopyError(f"target {spec.target} is read-only", disk_key=spec.disk_key)
            start = 0
            checkpoint = Path(spec.checkpoint) if spec.checkpoint and spec.mode == FULL else None
            if checkpoint is not None and not target.info.can_flush:
                dlog.warning(
                    "target cannot flush: nothing is known durable, no checkpoint kept",
                    checkpoint=str(checkpoint),
                )
                checkpoint.unlink(missing_ok=True)
                checkpoint = None
            if checkpoint is not None:
                identity = _identity(spec, size, target.info.size)
                if options.resume:
                    start = resume_offset(checkpoint, identity)
                if start:
                    extents = ext.clip_from(extents, start)
                    result.resumed_from = start
                    dlog.info(
                        "resuming full copy from checkpoint",
                        offset=start,
                        checkpoint=str(checkpoint),
                    )
                else:
                    checkpoint.unlink(missing_ok=True)  # what it said is being rewritten
            total = sum(e[1] for e in extents)
            tracker.set_total(total)
            dlog.info(
                "plan ready",
                mode=str(spec.mode),
                virtual_size=size,
                bytes_total=total,
                extents=len(extents),
                resumed_from=start,
                source=str(spec.source),
                target=str(spec.target),
            )
            request_size = _request_size(options.request_size, src_info, target.info)
            workers = options.connections
            if not (src_info.can_multi_conn and target.info.can_multi_conn):
                workers = 1
            result.connections = workers
            can_zero = target.info.can_write_zeroes
            zero_step = ext.ZERO_STEP if can_zero else request_size
            chunks = ext.split(extents, request_size, zero_step)
            engine = CopyEngine(
                functools.partial(_connect, spec.source, options),
                functools.partial(_connect, spec.target, options),
                chunks,
                tracker,
                options,
                disk_key=spec.disk_key,
                request_size=request_size,
                can_zero=can_zero,
                workers=workers,
                start=start,
                flush_interval=options.checkpoint_interval if checkpoint else 0.0,
            )
            if checkpoint is not None:
                checkpointer = Checkpointer(checkpoint, identity, engine.safe_offset, start)
                engine.on_durable = checkpointer.start().poke
        except BaseException:
            target.close()
            raise
        copied = False
        try:
            engine.run(first_target=target)
            copied = True
        finally:
            result.reconnects = engine.reconnects
            if checkpointer is not None:
                checkpointer.close(completed=copied)
        if options.verify:
            from ._verify import hash_both  # hashlib only when verifying (start-up time)

            tracker.set_phase(VERIFY)
            src_digest, tgt_digest = hash_both(
                functools.partial(_connect, spec.source, options),
                functools.partial(_connect, spec.target, options),
                ranges,
                request_size,
            )
            result.digest = src_digest
            result.extra["target_digest"] = tgt_digest
            tracker.set_digests(src_digest, tgt_digest)
            if src_digest != tgt_digest:
                raise VerifyError(
                    f"verification failed: source sha256 {src_digest} != target sha256 "
                    f"{tgt_digest}",
                    disk_key=spec.disk_key,
                )
        tracker.finish(COMPLETED)
        result.status = COMPLETED
    except CopyStopped as exc:
        result.status = STOPPED
        result.error = str(exc)
        dlog.warning("disk stopped", error=result.error)
        tracker.finish(STOPPED, result.error)
    except MigrateKitError as exc:
        message = str(exc)
        if not message.startswith(f"disk {spec.disk_key}:"):
            message = f"disk {spec.disk_key}: {message}"
        result.status = FAILED
        result.error = message
        result.verify_failed = isinstance(exc, VerifyError)
        if result.verify_failed and checkpointer is not None:
            # the replica does not hold what the checkpoint says: a retry must copy it all
            checkpointer.path.unlink(missing_ok=True)
        dlog.error("disk failed", error=message)
        tracker.finish(FAILED, message)
    except Exception as exc:
        message = f"disk {spec.disk_key}: internal error: {exc!r}"
        result.status = FAILED
        result.error = message
        log.exception("disk failed", disk_key=spec.disk_key)
        tracker.finish(FAILED, message)
    result.bytes_total = tracker.bytes_total
    result.bytes_done = tracker.bytes_done
    result.bytes_read = tracker.bytes_read
    result.bytes_written = tracker.bytes_written
    result.bytes_zeroed = tracker.bytes_zeroed
    result.seconds = tracker.seconds
    result.throughput_bps = tracker.throughput_bps
    if result.status == COMPLETED:
        dlog.info(
            "disk completed",
            bytes_written=result.bytes_written,
            bytes_zeroed=result.bytes_zeroed,
            seconds=round(result.seconds, 3),
        )
    return result


def _identity(spec: DiskSpec, size: int, target_size: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed from."""
    return {
        "disk_key": spec.disk_key,
        "source": spec.source_id or str(spec.source),
        "target": spec.target_id or str(spec.target),
        "size": size,
        "target_size": target_size,
    }


def _request_size(wanted: int, src: p.ExportInfo, tgt: p.ExportInfo) -> int:
    """The data request size: ≤ both servers' maximum, a multiple of both minimum sizes."""
    align = max(src.min_block, tgt.min_block, 1)
    size = min(wanted, src.max_block, tgt.max_block, p.MAX_REQUEST_DEFAULT)
    return max(align, size - size % align)
