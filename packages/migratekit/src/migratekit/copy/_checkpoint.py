"""Checkpoints of a full copy: how far it has safely reached, so a retry can resume.

One JSON file per disk, written atomically (temporary file, fsync, rename, fsync of the
directory) and only with an offset below which every byte was written *and* flushed on the
target (:meth:`CopyEngine.safe_offset`)::

    {"version": 1, "disk_key": "2000", "source": "vm-1/snapshot-7/2000",
     "target": "nbd://…/vol-abc", "size": 10737418240, "target_size": 10737418240,
     "safe_offset": 5368709120, "resumed_from": 0, "updated_at": 1764680000.0}

``source`` and ``target`` are identities given by the caller (the VMA: VM, snapshot and disk;
the target export), the source URI and target URI by default. A resume uses a checkpoint only
when every identity field matches this run; otherwise it logs why and copies from zero. A
completed copy leaves ``safe_offset`` = ``size`` and ``"completed": true``, so resuming a job
whose other disk failed copies nothing more for this one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._log import get_logger

log = get_logger(__name__)

VERSION = 1
#: The fields that must match for a checkpoint to be used.
IDENTITY = ("disk_key", "source", "target", "size", "target_size")


def checkpoint_path(directory: str | Path, disk_key: str) -> Path:
    """The checkpoint file of ``disk_key`` in ``directory``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in disk_key)
    return Path(directory) / f"disk-{safe}.json"


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` durably: a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    data = (json.dumps(doc, sort_keys=True) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def resume_offset(path: Path, identity: dict[str, Any]) -> int:
    """The offset to resume from: the checkpoint's safe offset when it matches, else 0.

    A missing, unreadable or mismatched checkpoint is logged (with the field that differs)
    and ignored: the copy starts from zero.
    """
    key = identity["disk_key"]
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        log.info("no checkpoint: full copy from zero", disk_key=key, checkpoint=str(path))
        return 0
    except (OSError, ValueError) as exc:
        log.warning(
            "checkpoint unreadable, ignored: full copy from zero",
            disk_key=key,
            checkpoint=str(path),
            error=str(exc),
        )
        return 0
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        log.warning("checkpoint of another format, ignored: full copy from zero", disk_key=key)
        return 0
    for name in IDENTITY:
        if doc.get(name) != identity[name]:
            log.warning(
                "checkpoint does not match this copy, ignored: full copy from zero",
                disk_key=key,
                checkpoint=str(path),
                field=name,
                checkpoint_value=doc.get(name),
                expected=identity[name],
            )
            return 0
    offset = doc.get("safe_offset")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= doc["size"]:
        log.warning("checkpoint offset invalid, ignored: full copy from zero", disk_key=key)
        return 0
    return offset


class Checkpointer:
    """Writes a disk's checkpoint on a thread of its own whenever the safe offset advanced.

    :meth:`poke` (called by the engine after each answered flush) wakes it; it reads
    ``safe_offset()`` and writes only when the offset moved, so the copy threads never wait
    for the disk. :meth:`close` writes a last one (e.g. after SIGTERM stopped the copy).
    """

    def __init__(
        self,
        path: Path,
        identity: dict[str, Any],
        safe_offset: Callable[[], int],
        resumed_from: int,
    ) -> None:
        self.path = path
        self.identity = identity
        self.safe_offset = safe_offset
        self.resumed_from = resumed_from
        self.written = resumed_from
        self.writes = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint-{identity['disk_key']}", daemon=True
        )

    def start(self) -> Checkpointer:
        """Start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def poke(self) -> None:
        """Something became durable: check the safe offset soon."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            self._save()

    def _save(self, completed: bool = False) -> None:
        offset = self.identity["size"] if completed else self.safe_offset()
        if offset <= self.written and not completed:
            return
        doc = {
            "version": VERSION,
            **self.identity,
            "safe_offset": offset,
            "resumed_from": self.resumed_from,
            "completed": completed,
            "updated_at": round(time.time(), 3),
        }
        try:
            write_atomic(self.path, doc)
        except OSError as exc:
            log.warning(
                "checkpoint not written",
                disk_key=self.identity["disk_key"],
                checkpoint=str(self.path),
                error=str(exc),
            )
            return
        self.written = offset
        self.writes += 1
        log.debug("checkpoint written", disk_key=self.identity["disk_key"], safe_offset=offset)

    def close(self, *, completed: bool) -> None:
        """Stop the thread and save the last checkpoint (the whole size once completed)."""
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._save(completed)
        if completed:
            return
        log.info(
            "checkpoint kept for a resume",
            disk_key=self.identity["disk_key"],
            checkpoint=str(self.path),
            safe_offset=self.written,
        )
