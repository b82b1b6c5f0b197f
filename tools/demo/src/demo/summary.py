"""The closing table: bytes moved per sync, duration, throughput, downtime, byte checks."""

from __future__ import annotations

from .flow import Outcome, _size, downtime_seconds


def rows(out: Outcome) -> list[tuple[str, str, str, str, str]]:
    """(sync, type, bytes moved, duration, throughput) per sync."""
    table = []
    for s in out.syncs:
        secs = s.seconds
        rate = f"{_size(s.bytes_moved / secs)}/s" if secs > 0 else "-"
        table.append(
            (
                s.label,
                str(s.job.get("sync_type") or s.job.get("type")),
                _size(s.bytes_moved),
                f"{secs:.1f} s",
                rate,
            )
        )
    return table


def render(out: Outcome, wall_seconds: float) -> None:
    """Print the summary (a rich table when rich is installed, else aligned text)."""
    head = ("sync", "type", "bytes moved", "duration", "throughput")
    body = rows(out)
    downtime = downtime_seconds(out.failover) if out.failover else None
    lines = [
        f"guest writes between syncs: {_size(out.written)}",
        "live failover downtime (source off → target running): "
        + (f"{downtime:.1f} s" if downtime is not None else "n/a"),
        "byte check: "
        + (
            ", ".join(
                f"disk {c.disk_key} {'equal' if c.equal else 'DIFFERENT'}" for c in out.checks
            )
            or "not run"
        )
        + (
            " (sha256 over each source disk's size; the rest of each larger volume is zero)"
            if any(c.tail_bytes for c in out.checks)
            else ""
        ),
        f"total demo time: {wall_seconds:.0f} s",
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        for r in [head, *body]:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        for line in lines:
            print(line)
        return
    table = Table(title="OSSEA-Migrate lab migration")
    for i, name in enumerate(head):
        table.add_column(name, justify="right" if i >= 2 else "left")
    for r in body:
        table.add_row(*r)
    console = Console()
    console.print(table)
    for line in lines:
        console.print(line)
