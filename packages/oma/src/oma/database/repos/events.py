"""job_events: the timeline of what happened to a job or a VM context."""

from __future__ import annotations

from typing import Any

from ..models import JobEvent


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
    query = JobEvent.select()
    if job_id is not None:
        query = query.where(JobEvent.job == job_id)
    if context_id is not None:
        query = query.where(JobEvent.context == context_id)
    newest = list(query.order_by(JobEvent.at.desc(), JobEvent.id.desc()).limit(limit))
    return list(reversed(newest))
