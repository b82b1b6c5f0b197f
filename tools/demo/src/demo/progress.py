"""Follow a replication job through ``GET /api/v1/progress/{id}``: live bars or plain lines.

On a terminal (and with rich installed) one bar per disk plus the job's state is redrawn in
place. Otherwise one parseable line is printed at most once a second and at every status or
phase change, e.g. ``job=1a2b… status=replicating phase=copy percent=42.0 done=1.2GiB``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .api import DemoError, OmaApi

TERMINAL = {"completed", "failed", "stopped"}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"


def rate(p: dict[str, Any]) -> float:
    """Bytes/s of a job or disk progress (a job's is the sum of its disks' when not set)."""
    value = float(p.get("throughput_bps") or 0)
    if not value and p.get("disks"):
        value = sum(float(d.get("throughput_bps") or 0) for d in p["disks"])
    return value


def plain_line(p: dict[str, Any]) -> str:
    """One ``key=value`` line of a job's progress."""
    return (
        f"job={p['job_id'][:8]} status={p.get('job_status')} phase={p.get('phase')} "
        f"percent={float(p.get('percent') or 0):.1f} done={_size(p.get('bytes_done') or 0)} "
        f"total={_size(p.get('bytes_total') or 0)} rate={_size(rate(p))}/s"
    )


def follow(
    api: OmaApi,
    job_id: str,
    title: str,
    *,
    tty: bool | None = None,
    interval: float = 0.25,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Show the job's progress until it is terminal; return the final job document.

    Raises :class:`DemoError` when the job is still not finished after ``timeout`` seconds.
    """
    live = sys.stdout.isatty() if tty is None else tty
    deadline = time.monotonic() + timeout
    if live:
        try:
            return _follow_rich(api, job_id, title, interval, deadline)
        except ImportError:
            pass
    return _follow_plain(api, job_id, interval, deadline)


def _check_deadline(p: dict[str, Any], deadline: float) -> None:
    if time.monotonic() > deadline:
        raise DemoError(f"job {p['job_id']} is still {p.get('job_status')} (timed out)")


def _speed(bps: float) -> str:
    return f"{_size(bps)}/s" if bps else ""


def _follow_plain(api: OmaApi, job_id: str, interval: float, deadline: float) -> dict[str, Any]:
    last_key: tuple[Any, ...] | None = None
    last_print = 0.0
    while True:
        p = api.get(f"progress/{job_id}")
        key = (p.get("job_status"), p.get("phase"))
        now = time.monotonic()
        if key != last_key or now - last_print >= 1.0:
            print(plain_line(p), flush=True)
            last_key, last_print = key, now
        if p.get("job_status") in TERMINAL:
            return api.get(f"replications/{job_id}")
        _check_deadline(p, deadline)
        time.sleep(interval)


def _follow_rich(
    api: OmaApi, job_id: str, title: str, interval: float, deadline: float
) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
    )

    columns = (
        TextColumn("{task.description:<13}"),
        BarColumn(bar_width=16),
        TextColumn("{task.percentage:>5.1f}%"),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[rate]:>11}"),
        TextColumn("{task.fields[state]}"),
    )
    with Progress(*columns, transient=False, refresh_per_second=8) as bars:
        job_task = bars.add_task(title, total=None, state="pending", rate="")
        disk_tasks: dict[str, Any] = {}
        while True:
            p = api.get(f"progress/{job_id}")
            state = str(p.get("job_status"))
            total = p.get("bytes_total") or None
            bars.update(
                job_task,
                total=total,
                completed=p.get("bytes_done") or 0,
                state=state,
                rate=_speed(rate(p)),
            )
            for d in p.get("disks") or []:
                key = d["disk_key"]
                if key not in disk_tasks:
                    disk_tasks[key] = bars.add_task(f" disk {key}", total=None, state="", rate="")
                bars.update(
                    disk_tasks[key],
                    total=d.get("bytes_total") or None,
                    completed=d.get("bytes_done") or 0,
                    state=str(d.get("phase") or d.get("status")),
                    rate=_speed(rate(d)),
                )
            if p.get("job_status") in TERMINAL:
                if p.get("job_status") == "completed":
                    for task_id in (job_task, *disk_tasks.values()):
                        task = bars.tasks[task_id]
                        if task.total is None:
                            bars.update(
                                task_id,
                                total=max(task.completed, 1),
                                completed=max(task.completed, 1),
                            )
                return api.get(f"replications/{job_id}")
            _check_deadline(p, deadline)
            time.sleep(interval)
