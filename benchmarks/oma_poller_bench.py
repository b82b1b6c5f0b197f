"""Benchmark the OMA progress poller: 1,000 active jobs across 10 VMAs within one 5 s tick.

Starts 10 stub VMA HTTP servers (real ``ThreadingHTTPServer`` processes' threads on free
loopback ports answering the batched ``GET /api/v1/progress?job_ids=…`` endpoint), seeds a
SQLite database (WAL) with 1,000 ``replicating`` jobs of 2 disks each, then runs ticks in
which every job's bytes advance (the worst case: every job and disk row is rewritten, one
transaction per job). Prints per-tick times and exits non-zero when the slowest tick exceeds
the tick interval.

    python benchmarks/oma_poller_bench.py [--jobs 1000] [--vmas 10] [--ticks 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from labtest.oma import (
    StubVma,
    oma_database,
    progress_doc,
    seed_replicating_jobs,
    throwaway_database,
)
from oma.services.classify import Timeouts
from oma.services.poller import ProgressPoller


def _advance(stubs: list[StubVma], ids: list[list[str]], tick: int, total: int) -> None:
    """Every job moves forward by one step (so every row changes)."""
    done = min(total, tick * (total // 10))
    for stub, job_ids in zip(stubs, ids, strict=True):
        for seq, job_id in enumerate(job_ids):
            stub.set_progress(
                job_id,
                progress_doc(
                    job_id,
                    "running",
                    [
                        {
                            "disk_key": "2000",
                            "bytes_total": total,
                            "bytes_done": done,
                            "throughput_bps": 1e8,
                            "seq": tick * 10 + seq % 7,
                        },
                        {
                            "disk_key": "2001",
                            "bytes_total": total,
                            "bytes_done": done // 2,
                            "throughput_bps": 5e7,
                            "seq": tick * 10 + seq % 5,
                        },
                    ],
                ),
            )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when every tick fits in the interval."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--vmas", type=int, default=10)
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--interval", type=float, default=5.0, help="tick budget in seconds")
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgresql", "mariadb"],
        default="sqlite",
        help="sqlite (a temp file) or a throwaway database on the local server",
    )
    args = ap.parse_args(argv)
    per_vma = args.jobs // args.vmas
    total = 10 << 30
    with tempfile.TemporaryDirectory(prefix="oma-bench-") as tmp, contextlib.ExitStack() as st:
        stubs = [st.enter_context(StubVma()) for _ in range(args.vmas)]
        if args.database == "sqlite":
            st.enter_context(oma_database(Path(tmp) / "oma.db"))
        else:
            st.enter_context(oma_database(st.enter_context(throwaway_database(args.database))))
        seeded = seed_replicating_jobs(
            [(f"vma-{i}", s.url) for i, s in enumerate(stubs)], per_vma, disks_per_job=2
        )
        ids = list(seeded.values())
        tokens = {f"token:vma-{i}": s.token for i, s in enumerate(stubs)}
        poller = ProgressPoller(
            timeouts=Timeouts(),
            token_for=lambda v: tokens[v.token_encrypted],
            worker_id="bench-worker",  # as in `oma worker`: each tick leases its jobs first
            lease_seconds=15,
        )
        st.callback(poller.close)
        times = []
        print(
            f"poller benchmark: {per_vma * args.vmas} replicating jobs x 2 disks, "
            f"{args.vmas} stub VMAs, {args.database}, budget {args.interval:.1f}s per tick"
        )
        for tick in range(1, args.ticks + 1):
            _advance(stubs, ids, tick, total)
            started = time.monotonic()
            result = poller.tick()
            elapsed = time.monotonic() - started
            times.append(elapsed)
            print(
                f"tick {tick}: {elapsed:.2f}s  (fetch {result.fetch_seconds:.2f}s, "
                f"write {result.write_seconds:.2f}s)  jobs={result.jobs} "
                f"updated={result.updated} errors={len(result.errors)}"
            )
            if result.updated != per_vma * args.vmas or result.errors:
                print(f"error: expected every job updated, got {result}", file=sys.stderr)
                return 1
        requests = sum(s.requests for s in stubs)
        print(
            f"ticks: min {min(times):.2f}s  median {statistics.median(times):.2f}s  "
            f"max {max(times):.2f}s; HTTP requests {requests} "
            f"({requests / args.ticks:.0f} per tick)"
        )
        if max(times) > args.interval:
            print(
                f"FAIL: slowest tick {max(times):.2f}s exceeds {args.interval:.1f}s",
                file=sys.stderr,
            )
            return 1
        print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
