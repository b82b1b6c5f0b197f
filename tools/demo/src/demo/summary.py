"""The closing table: bytes moved per sync, duration, throughput, the test failover (its VM,
duration), downtime, byte checks."""

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
    test = out.test
    if test is not None and test.clean:
        table.append(
            (
                "test failover",
                f"VM {test.vm_name}",
                "-",
                f"{test.start_seconds + test.end_seconds:.1f} s",
                "-",
            )
        )
    return table


def _test_lines(out: Outcome) -> list[str]:
    test = out.test
    if test is None:
        return []
    during = f" during job {test.during_job}" if test.during_job else ""
    return [
        f"test failover{during}: VM {test.vm_name} running after {test.start_seconds:.1f} s, "
        f"ended in {test.end_seconds:.1f} s; CloudStack afterwards "
        + ("as before the test (VMs, volumes, snapshots)" if test.clean else "NOT as before")
    ]


def render(out: Outcome, wall_seconds: float) -> None:
    """Print the summary (a rich table when rich is installed, else aligned text)."""
    head = ("sync", "type", "bytes moved", "duration", "throughput")
    body = rows(out)
    downtime = downtime_seconds(out.failover) if out.failover else None
    lines = [
        f"guest writes between syncs: {_size(out.written)}",
        *_test_lines(out),
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
