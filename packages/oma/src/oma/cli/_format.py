"""Text formatting for operator commands: sizes, durations, tables, progress lines and bars."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def size(n: float | None) -> str:
    """Bytes as a short binary size (``1.5 GiB``)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def duration(seconds: float | None) -> str:
    """Seconds as ``h:mm:ss`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def rate(bps: float | None) -> str:
    """Bytes per second as ``85.0 MiB/s`` (``-`` when unknown or zero)."""
    return f"{size(bps)}/s" if bps else "-"


def when(stamp: str | None) -> str:
    """An API timestamp (RFC 3339, UTC) to the second: ``2026-12-02 17:21:02``."""
    if not stamp:
        return "-"
    return stamp.replace("T", " ")[:19]


def elapsed(start: str | None, end: str | None) -> float | None:
    """Seconds between two API timestamps (None when either is missing)."""
    if not start or not end:
        return None
    from datetime import datetime

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return max(0.0, (parse(end) - parse(start)).total_seconds())


def echo_json(data: Any) -> None:
    """Print the API's JSON (indented)."""
    import json

    import click

    click.echo(json.dumps(data, indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned plain-text table."""
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _unsized(p: dict[str, Any]) -> int:
    """How many of the job's disks have not reported their size yet (their bytes are not in
    the job's total, so neither percent nor ETA mean much until they have)."""
    return sum(
        1 for d in p.get("disks") or [] if d.get("status") == "queued" and not d.get("bytes_total")
    )


def _eta(p: dict[str, Any]) -> float | None:
    return None if _unsized(p) or p.get("stop_requested") else p.get("eta_seconds")


def _status(p: dict[str, Any]) -> str:
    status = p.get("job_status") or p["status"]
    if p.get("stop_requested") and status not in ("completed", "failed", "stopped"):
        return f"{status}(stop requested)"
    return status


def progress_line(p: dict[str, Any]) -> str:
    """One parseable line (a job document or a progress answer): ``job=… status=… phase=…
    percent=… done=1.5GiB/3.0GiB rate=85.0MiB/s eta=0:00:21`` (``-`` when unknown)."""
    done = f"{size(p.get('bytes_done'))}/{size(p.get('bytes_total'))}".replace(" ", "")
    if _unsized(p):
        done += f"+{_unsized(p)}disks"
    return (
        f"job={p['job_id']} status={_status(p)} "
        f"phase={p.get('phase') or '-'} percent={float(p.get('percent') or 0):.1f} "
        f"done={done} rate={rate(p.get('throughput_bps')).replace(' ', '')} "
        f"eta={duration(_eta(p))}"
    )


def progress_bar(p: dict[str, Any], width: int = 30) -> str:
    """A one-line bar: ``[#####.....]  42.0%  1.2 GiB/3.0 GiB  85.0 MiB/s  ETA 0:00:21  copy``."""
    pct = max(0.0, min(100.0, float(p.get("percent") or 0)))
    filled = int(width * pct / 100)
    bar = "#" * filled + "." * (width - filled)
    unsized = _unsized(p)
    total = size(p.get("bytes_total")) + (f" (+{unsized} disks)" if unsized else "")
    return (
        f"[{bar}] {pct:5.1f}%  {size(p.get('bytes_done'))}/{total}  "
        f"{rate(p.get('throughput_bps'))}  ETA {duration(_eta(p))}  "
        f"{_status(p)}/{p.get('phase') or '-'}"
    )
