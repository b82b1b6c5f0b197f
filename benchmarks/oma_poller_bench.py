"""Benchmark the OMA progress poller: every replicating job polled and written within one tick.

For each database — SQLite (a WAL file, 2,000 jobs), PostgreSQL and MariaDB (a throwaway
database on the local server, 10,000 jobs) — starts 100 stub VMA HTTP servers (real
``ThreadingHTTPServer`` threads on free loopback ports answering the batched
``GET /api/v1/progress?job_ids=…`` endpoint), seeds the jobs (2 disks each) spread over them,
then runs ticks in which every job's bytes and every disk's ``seq`` advance (the worst case:
every job and disk row is rewritten each tick). Prints per-tick times (fetch, write, and the
CPU time of this process: poller and stub VMAs, not the database server) per database and
exits non-zero when a tick exceeds the tick interval, a job was not updated or a database
server is missing.

    python benchmarks/oma_poller_bench.py [--database all|sqlite|postgresql|mariadb]
        [--jobs N] [--vmas 100] [--ticks 5] [--interval 5]
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


DEFAULT_JOBS = {"sqlite": 2000, "postgresql": 10000, "mariadb": 10000}


def run(database: str, jobs: int, vmas: int, ticks: int, interval: float) -> bool:
    """Seed ``jobs`` across ``vmas`` stub VMAs on ``database``, run ``ticks`` ticks and print
    their times; True when every tick updated every job within ``interval`` seconds."""
    per_vma = jobs // vmas
    total = 10 << 30
    with tempfile.TemporaryDirectory(prefix="oma-bench-") as tmp, contextlib.ExitStack() as st:
        stubs = [st.enter_context(StubVma()) for _ in range(vmas)]
        if database == "sqlite":
            st.enter_context(oma_database(Path(tmp) / "oma.db"))
        else:
            st.enter_context(oma_database(st.enter_context(throwaway_database(database))))
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
            f"{database}: {per_vma * vmas} replicating jobs x 2 disks, {vmas} stub VMAs, "
            f"budget {interval:.1f}s per tick"
        )
        for tick in range(1, ticks + 1):
            _advance(stubs, ids, tick, total)
            started, cpu = time.monotonic(), time.process_time()
            result = poller.tick()
            elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
            times.append(elapsed)
            print(
                f"  tick {tick}: {elapsed:.2f}s  (read {result.read_seconds:.2f}s, "
                f"fetch {result.fetch_seconds:.2f}s, "
                f"write {result.write_seconds:.2f}s, CPU {cpu:.2f}s)  jobs={result.jobs} "
                f"updated={result.updated} errors={len(result.errors)}"
            )
            if result.updated != per_vma * vmas or result.errors:
                print(f"error: expected every job updated, got {result}", file=sys.stderr)
                return False
        requests = sum(s.requests for s in stubs)
        print(
            f"  {database} ticks: min {min(times):.2f}s  median {statistics.median(times):.2f}s  "
            f"max {max(times):.2f}s; HTTP requests {requests} ({requests / ticks:.0f} per tick)"
        )
        if max(times) > interval:
            print(
                f"FAIL: {database}: slowest tick {max(times):.2f}s exceeds {interval:.1f}s",
                file=sys.stderr,
            )
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on each chosen database; return 0 when every tick fits the budget."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--jobs",
        type=int,
        help="replicating jobs (default: "
        + ", ".join(f"{k} {v:,}" for k, v in DEFAULT_JOBS.items())
        + ")",
    )
    ap.add_argument("--vmas", type=int, default=100)
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--interval", type=float, default=5.0, help="tick budget in seconds")
    ap.add_argument(
        "--database",
        choices=["all", *DEFAULT_JOBS],
        default="all",
        help="sqlite (a temp file), a throwaway database on the local PostgreSQL or MariaDB "
        "server, or all three (default)",
    )
    args = ap.parse_args(argv)
    chosen = list(DEFAULT_JOBS) if args.database == "all" else [args.database]
    ok = True
    for database in chosen:
        jobs = args.jobs or DEFAULT_JOBS[database]
        try:
            ok = run(database, jobs, args.vmas, args.ticks, args.interval) and ok
        except Exception as exc:  # e.g. no server: report it and measure the others
            print(f"FAIL: {database}: {type(exc).__name__}: {exc}", file=sys.stderr)
            ok = False
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
