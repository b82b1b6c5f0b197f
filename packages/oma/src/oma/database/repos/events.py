"""job_events: the timeline of what happened to a job or a VM context."""

from __future__ import annotations

from typing import Any

from ..models import JobEvent
from ._select import Where, rows


def append_event(
    kind: str,
    message: str,
    *,
    job_id: str | None = None,
    context_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Record one event (``kind`` is a short machine word, ``message`` a sentence)."""
    return JobEvent.create(job=job_id, context=context_id, kind=kind, message=message, data=data)


def list_events(
    *, job_id: str | None = None, context_id: str | None = None, limit: int = 200
) -> list[JobEvent]:
    """Events of a job and/or context, oldest first (the last ``limit`` of them)."""
    where = Where()
    if job_id is not None:
        where.eq("job_id", job_id)
    if context_id is not None:
        where.eq("context_id", context_id)
    newest = rows(JobEvent, where, order="at DESC, id DESC", limit=limit)
    return list(reversed(newest))
