"""Benchmark the OMA API against a bare Flask app under the same gunicorn settings.

Seeds a database (SQLite by default; ``--database postgresql|mariadb`` uses a throwaway
database on the local server) with 10,000 VM contexts (2 disks each) and 100,000 finished
jobs (2 disk rows each), starts the real ``oma serve`` and a bare Flask app (one JSON route,
no database, no auth) under the same gunicorn settings (:func:`oma.cli.serve.gunicorn_options`:
gthread, ``--workers`` x ``--threads``) on free loopback ports, and drives both with a bounded
load generator (``wrk`` when installed, else a keep-alive Python client with ``--connections``
threads, bounded in time and count) for four authenticated GETs: the jobs list, the contexts
list (each one page of the API's default size), one job and one context. Prints for each its
ratio of requests/s to the bare app's (measured before and after each OMA run: the ratio is
against the mean of those two; the whole sequence runs ``--rounds`` times and the median
round counts) and the server's CPU time per request (gunicorn's master and workers, from
/proc) beside the bare app's;
exits non-zero when a ratio is below ``--min-ratio`` or any answer was not 200. Everything
it starts is stopped by PID.

    python benchmarks/oma_api_bench.py [--database sqlite|postgresql|mariadb]
        [--contexts 10000] [--jobs 100000] [--duration 5] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from labtest.oma import oma_database, throwaway_database
from labtest.procs import ManagedProcess, free_port

BATCH = 500
STATUSES = ("completed", "completed", "completed", "failed", "stopped")


def seed(contexts: int, jobs: int) -> tuple[str, str]:
    """Insert ``contexts`` contexts (2 disks each) and ``jobs`` finished jobs (2 disk rows each)
    in bulk into the bound database; return (a job id, a context id) for the detail GETs."""
    from oma.database.db import database
    from oma.database.models import JobDisk, ReplicationJob, VmaAppliance, VmContext, VmDisk

    start = datetime(2024, 1, 1, tzinfo=UTC)
    ctx_ids = [str(uuid.uuid4()) for _ in range(contexts)]
    with database.connection_context():
        with database.atomic():
            vma = VmaAppliance.create(
                name="vma-bench", url="http://127.0.0.1:9", token_encrypted="x"
            )
        for lo in range(0, contexts, BATCH):
            ids = ctx_ids[lo : lo + BATCH]
            with database.atomic():
                VmContext.insert_many(
                    [
                        {
                            "id": cid,
                            "vma": vma.id,
                            "vcenter": "vc.bench",
                            "vm_id": str(uuid.uuid4()),
                            "name": f"vm-{lo + i:05d}",
                            "state": "ready_for_failover",
                            "ready_for_failover": True,
                            "spec": {"cpus": 2, "memory_mb": 4096},
                        }
                        for i, cid in enumerate(ids)
                    ]
                ).execute()
                VmDisk.insert_many(
                    [
                        {"context": cid, "disk_key": key, "capacity_bytes": 10 << 30, "label": key}
                        for cid in ids
                        for key in ("2000", "2001")
                    ]
                ).execute()
        job_id = ""
        for lo in range(0, jobs, BATCH):
            rows = []
            for n in range(lo, min(lo + BATCH, jobs)):
                at = start + timedelta(seconds=n * 30)
                rows.append(
                    {
                        "id": str(uuid.uuid4()),
                        "context": ctx_ids[n % contexts],
                        "vm_name": f"vm-{n % contexts:05d}",  # its context's, as jobs copy it
                        "vma": vma.id,
                        "requested_type": "auto",
                        "effective_type": "incremental" if n >= contexts else "full",
                        "status": STATUSES[n % len(STATUSES)],
                        "percent": 100.0,
                        "bytes_total": 20 << 30,
                        "bytes_done": 20 << 30,
                        "created_at": at,
                        "started_at": at,
                        "updated_at": at + timedelta(minutes=5),
                        "finished_at": at + timedelta(minutes=5),
                    }
                )
            with database.atomic():
                ReplicationJob.insert_many(rows).execute()
                JobDisk.insert_many(
                    [
                        {
                            "job": r["id"],
                            "disk_key": key,
                            "status": "completed",
                            "bytes_total": 10 << 30,
                            "bytes_done": 10 << 30,
                        }
                        for r in rows
                        for key in ("2000", "2001")
                    ]
                ).execute()
            job_id = rows[len(rows) // 2]["id"]
        _analyze(database.obj)
    return job_id, ctx_ids[contexts // 2]


def _analyze(db: Any) -> None:
    """Refresh the planner's statistics after the bulk load (as autovacuum would)."""
    from peewee import MySQLDatabase, PostgresqlDatabase

    if isinstance(db, PostgresqlDatabase):
        db.execute_sql("VACUUM ANALYZE")
    elif isinstance(db, MySQLDatabase):
        db.execute_sql("ANALYZE TABLE replication_jobs, job_disks, vm_contexts, vm_disks")
    else:
        db.execute_sql("ANALYZE")


def bare_app() -> Any:
    """The baseline: a Flask app answering every GET with a small JSON document."""
    from flask import Flask, jsonify

    app = Flask("bare")

    @app.get("/", defaults={"path": ""})
    @app.get("/<path:path>")
    def answer(path: str) -> Any:
        return jsonify({"status": "ok", "path": path})

    return app


def serve_bare() -> None:
    """Run :func:`bare_app` under ``oma serve``'s gunicorn settings (config from OMA_*)."""
    from gunicorn.app.base import BaseApplication

    from oma.cli.serve import gunicorn_options
    from oma.config import load_config

    options = gunicorn_options(load_config())

    class Bare(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return bare_app()

    Bare().run()


@contextlib.contextmanager
def server(argv: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[tuple[str, int]]:
    """Start a server process, wait for its port, yield (its URL, its PID), stop it by PID."""
    proc = ManagedProcess(argv, env=env, name=argv[-1], log_path=log).start()
    try:
        proc.wait_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.stop()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and its children so far (gunicorn's
    master and workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's PID
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def load_wrk(url: str, token: str, duration: float, connections: int) -> tuple[float, int, int]:
    """(requests/s, requests, non-200 answers) from ``wrk``."""
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:.0f}s", "-H",
         f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*?read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(x) for x in errors.groups())
    return rate, count, failed


def load_python(
    url: str, token: str, duration: float, connections: int, max_requests: int = 1_000_000
) -> tuple[float, int, int]:
    """(requests/s, requests, non-200 answers) from ``connections`` keep-alive threads, each
    stopping at the deadline or when ``max_requests`` were sent in all."""
    parts = url.split("/", 3)
    host, port = parts[2].split(":")
    path = "/" + parts[3]
    counts = [0] * connections
    failures = [0] * connections
    deadline = time.monotonic() + duration
    per_thread = max_requests // connections

    def run(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        while time.monotonic() < deadline and counts[i] < per_thread:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            counts[i] += 1
            failures[i] += response.status != 200
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return sum(counts) / elapsed, sum(counts), sum(failures)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when every ratio reaches ``--min-ratio``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", choices=["sqlite", "postgresql", "mariadb"], default="sqlite")
    ap.add_argument("--contexts", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (both apps)")
    ap.add_argument("--threads", type=int, default=4, help="threads per worker (both apps)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of the whole sequence")
    ap.add_argument("--connections", type=int, default=16, help="concurrent keep-alive clients")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--min-ratio", type=float, default=0.5)
    ap.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_bare:
        serve_bare()
        return 0
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    load = load_wrk if use_wrk else load_python
    with tempfile.TemporaryDirectory(prefix="oma-api-bench-") as tmp, contextlib.ExitStack() as st:
        base = Path(tmp)
        if args.database == "sqlite":
            url = f"sqlite:///{base / 'oma.db'}"
        else:
            url = st.enter_context(throwaway_database(args.database))
        started = time.monotonic()
        with oma_database(url):
            job_id, context_id = seed(args.contexts, args.jobs)
            from oma.database.db import database
            from oma.database.repos.tokens import create_token

            with database.connection_context():
                _, token = create_token("bench-viewer", "viewer")
        print(
            f"API benchmark: {args.database}, {args.contexts} contexts, {args.jobs} jobs "
            f"(seeded in {time.monotonic() - started:.1f}s); gunicorn {args.workers} workers x "
            f"{args.threads} threads; {'wrk' if use_wrk else 'python client'}, "
            f"{args.connections} connections, {args.duration:.0f}s per run, {args.rounds} rounds"
        )
        env = {
            **os.environ,
            "OMA_DATABASE_URL": url,
            "OMA_DATA_DIR": str(base / "data"),
            "OMA_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "OMA_API_WORKERS": str(args.workers),
            "OMA_API_THREADS": str(args.threads),
            "OMA_AUTO_UPGRADE": "false",
            "OMA_LOG_LEVEL": "WARNING",
        }
        bare_port, oma_port = free_port(), free_port()
        bare_argv = [sys.executable, str(Path(__file__).resolve()), "--serve-bare"]
        oma_argv = [sys.executable, "-m", "oma", "serve"]
        bare_url, bare_pid = st.enter_context(
            server(bare_argv, {**env, "OMA_BIND": f"127.0.0.1:{bare_port}"}, bare_port,
                   base / "bare.log")
        )  # fmt: skip
        oma_url, oma_pid = st.enter_context(
            server(oma_argv, {**env, "OMA_BIND": f"127.0.0.1:{oma_port}"}, oma_port,
                   base / "oma.log")
        )  # fmt: skip
        targets = [
            ("jobs list", "/api/v1/replications"),
            ("contexts list", "/api/v1/vm-contexts"),
            ("job detail", f"/api/v1/replications/{job_id}"),
            ("context detail", f"/api/v1/vm-contexts/{context_id}"),
        ]

        def measure(url: str, pid: int) -> tuple[float, int, int, float]:
            """(requests/s, requests, failures, server CPU ms per request)."""
            load(url, token, min(1.0, args.duration), args.connections)  # warm up
            before = cpu_seconds(pid)
            rate, count, failed = load(url, token, args.duration, args.connections)
            return rate, count, failed, 1000 * (cpu_seconds(pid) - before) / max(count, 1)

        # The machine's speed drifts by tens of percent within minutes: the bare app is
        # measured before and after each OMA run, each ratio is against the mean of those two,
        # and the whole sequence is repeated --rounds times (each result: the median round).
        bare_path = bare_url + "/api/v1/replications"
        bare_runs: list[tuple[float, int, int, float]] = []
        rounds: dict[str, list[tuple[float, float, int, int]]] = {n: [] for n, _ in targets}
        for _ in range(args.rounds):
            bare_runs.append(measure(bare_path, bare_pid))
            for name, path in targets:
                rate, count, failed, cpu_ms = measure(oma_url + path, oma_pid)
                bare_runs.append(measure(bare_path, bare_pid))
                around = (bare_runs[-2][0] + bare_runs[-1][0]) / 2
                rounds[name].append((rate / around, cpu_ms, count, failed))
        ok = all(r[2] == 0 for r in bare_runs)
        bare_cpu = statistics.median(r[3] for r in bare_runs)
        print(
            f"{'bare Flask':16} {statistics.median(r[0] for r in bare_runs):9.0f} req/s  "
            f"(runs {min(r[0] for r in bare_runs):.0f}-{max(r[0] for r in bare_runs):.0f}); "
            f"server CPU {bare_cpu:.2f} ms/request"
        )
        for name, _ in targets:
            ratios = sorted(r[0] for r in rounds[name])
            ratio = statistics.median(ratios)
            cpu_ms = statistics.median(r[1] for r in rounds[name])
            failed = sum(r[3] for r in rounds[name])
            print(
                f"{name:16} ratio {ratio:.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)})  "
                f"server CPU {cpu_ms:.2f} ms/request ({cpu_ms / bare_cpu:.1f}x bare; "
                f"{sum(r[2] for r in rounds[name])} requests"
                + (f", {failed} failed" if failed else "")
                + ")"
            )
            ok = ok and failed == 0 and ratio >= args.min_ratio
        print("OK" if ok else f"FAIL: a ratio is below {args.min_ratio} or a request failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
