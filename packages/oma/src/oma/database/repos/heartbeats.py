"""worker_heartbeats: each ``oma worker`` writes its row every tick; health reads them."""

from __future__ import annotations

import os
import socket
from datetime import datetime

from ..fields import now
from ..models import WorkerHeartbeat


def beat(worker_id: str, *, version: str | None = None, started_at: datetime | None = None) -> None:
    """Insert or refresh this worker's heartbeat row."""
    stamp = now()
    updated = (
        WorkerHeartbeat.update(seen_at=stamp, pid=os.getpid(), version=version)
        .where(WorkerHeartbeat.worker_id == worker_id)
        .execute()
    )
    if not updated:
        WorkerHeartbeat.create(
            worker_id=worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=version,
            started_at=started_at or stamp,
            seen_at=stamp,
        )


def latest() -> WorkerHeartbeat | None:
    """The most recent heartbeat of any worker, or None when no worker ever ran."""
    return WorkerHeartbeat.select().order_by(WorkerHeartbeat.seen_at.desc()).first()
