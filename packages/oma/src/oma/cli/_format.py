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


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned plain-text table."""
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def progress_line(p: dict[str, Any]) -> str:
    """One parseable line: ``job=… status=… phase=… percent=… bytes_done=… …``."""
    return (
        f"job={p['job_id']} status={p.get('job_status') or p['status']} "
        f"phase={p.get('phase') or '-'} percent={float(p.get('percent') or 0):.1f} "
        f"bytes_done={p.get('bytes_done', 0)} bytes_total={p.get('bytes_total', 0)} "
        f"throughput_bps={float(p.get('throughput_bps') or 0):.0f} "
        f"eta_seconds={'-' if p.get('eta_seconds') is None else int(p['eta_seconds'])}"
    )


def progress_bar(p: dict[str, Any], width: int = 30) -> str:
    """A one-line bar: ``[#####.....]  42.0%  1.2 GiB/3.0 GiB  85.0 MiB/s  ETA 0:00:21  copy``."""
    pct = max(0.0, min(100.0, float(p.get("percent") or 0)))
    filled = int(width * pct / 100)
    bar = "#" * filled + "." * (width - filled)
    rate = float(p.get("throughput_bps") or 0)
    return (
        f"[{bar}] {pct:5.1f}%  {size(p.get('bytes_done'))}/{size(p.get('bytes_total'))}  "
        f"{size(rate)}/s  ETA {duration(p.get('eta_seconds'))}  "
        f"{p.get('job_status') or p['status']}/{p.get('phase') or '-'}"
    )
