"""Jinja filters for the console: sizes, rates, durations, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask

NONE = "\u2013"  # an en dash for a missing value
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: int | float | None) -> str:
    """``1536`` → ``1.5 KiB``; None → an en dash."""
    if value is None:
        return NONE
    amount = float(value)
    for unit in UNITS:
        if abs(amount) < 1024 or unit == UNITS[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} {UNITS[-1]}"  # pragma: no cover - the loop always returns


def rate(value: int | float | None) -> str:
    """Bytes per second as ``12.0 MiB/s``."""
    return NONE if value is None else size(value) + "/s"


def duration(seconds: int | float | None) -> str:
    """``3725`` → ``1h 2m 5s``."""
    if seconds is None:
        return NONE
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def when(value: str | None) -> str:
    """An API timestamp (RFC 3339, UTC) as ``2026-01-01 12:00:00 UTC``."""
    if not value:
        return NONE
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(value: float | None) -> str:
    """``42.42`` → ``42.4 %``."""
    return NONE if value is None else f"{float(value):.1f} %"


def average_rate(job: dict) -> str:
    """A finished job's bytes over its run time; an active job's current rate."""
    if job.get("active"):
        return rate(job.get("throughput_bps"))
    start, end = job.get("started_at"), job.get("finished_at")
    if not start or not end or not job.get("bytes_done"):
        return NONE
    begun = datetime.fromisoformat(start.replace("Z", "+00:00"))
    ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    seconds = (ended - begun).total_seconds()
    return rate(job["bytes_done"] / seconds) if seconds > 0 else NONE


def combine(base: dict, **changes: object) -> dict:
    """``base`` with ``changes`` applied, empty values left out (for links that change one
    query parameter)."""
    return {k: v for k, v in {**base, **changes}.items() if v not in ("", None)}


def register(app: Flask) -> None:
    """Install the filters on ``app``'s Jinja environment."""
    app.jinja_env.filters.update(
        size=size,
        rate=rate,
        duration=duration,
        when=when,
        percent=percent,
        average_rate=average_rate,
        combine=combine,
    )
