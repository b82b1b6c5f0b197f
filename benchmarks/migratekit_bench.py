"""Benchmark: ``migratekit copy`` against ``nbdcopy`` on the same sources and fresh targets.

Run: ``python benchmarks/migratekit_bench.py [--size-gib 2] [--runs 5] [--tcp]``
(``scripts/nox -s bench -- migratekit`` runs it with the defaults).
Needs nbdkit and nbdcopy (libnbd-bin).

Cases (sources served by nbdkit, fixed seeds):

* ``sparse10`` / ``sparse50``: ``sparse-random`` with ~10 % / ~50 % data;
* ``dense``: ``pattern`` (every byte is data);
* ``incr1pct``: the sparse50 source with 1 % of the disk changed (random extents): migratekit
  copies ``--changed-extents``; nbdcopy copies the same ranges through nbdkit's ``extentlist``
  filter with ``--destination-is-zero -S 0`` (the way nbdcopy does incrementals).

Every copy goes to a fresh ``nbdkit memory`` target. nbdcopy and migratekit alternate within
each run. Times are wall-clock seconds of the whole process (migratekit's Python start-up
included); GiB/s are of the virtual size (what a user sees). Also printed: migratekit's own
copy time (from ``--json``), its peak RSS (``wait4``), and for the incremental case bytes
moved / changed bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labtest.procs import ManagedProcess, free_port

GiB = 1 << 30


def serve(argv: list[str], tmp: Path, name: str, tcp: bool) -> tuple[ManagedProcess, str]:
    """Start ``nbdkit ARGV`` on a unix socket (or TCP) and return it with its URI."""
    if tcp:
        port = free_port()
        proc = ManagedProcess(
            ["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(port), *argv],
            log_path=tmp / f"{name}.log",
            name=name,
        ).start()
        proc.wait_port(port)
        return proc, f"nbd://127.0.0.1:{port}/"
    sock = tmp / f"{name}.sock"
    if sock.exists():
        sock.unlink()
    proc = ManagedProcess(
        ["nbdkit", "-f", "-U", str(sock), *argv], log_path=tmp / f"{name}.log", name=name
    ).start()
    proc.wait_path(sock)
    return proc, f"nbd+unix:///?socket={sock}"


def fresh_target(
    kind: str, size: int, tmp: Path, case: str, tcp: bool
) -> tuple[ManagedProcess, str]:
    """A new empty target: nbdkit memory, or qemu-nbd (O_DIRECT, native AIO) on a raw file."""
    if kind == "memory":
        return serve(["memory", f"size={size}"], tmp, f"{case}-dst", tcp)
    image = tmp / f"{case}-dst.raw"
    if image.exists():
        image.unlink()
    with open(image, "wb") as fh:
        fh.truncate(size)
    argv = ["qemu-nbd", "-f", "raw", "-x", "", "-t", "-e", "4", "--cache=none", "--aio=native"]
    if tcp:
        port = free_port()
        proc = ManagedProcess(
            [*argv, "-b", "127.0.0.1", "-p", str(port), str(image)],
            log_path=tmp / "qemu-nbd.log",
            name="qemu-nbd",
        ).start()
        proc.wait_port(port)
        return proc, f"nbd://127.0.0.1:{port}/"
    sock = tmp / f"{case}-dst.sock"
    proc = ManagedProcess(
        [*argv, "-k", str(sock), str(image)], log_path=tmp / "qemu-nbd.log", name="qemu-nbd"
    ).start()
    proc.wait_path(sock)
    return proc, f"nbd+unix:///?socket={sock}"


def timed(argv: list[str]) -> tuple[float, int, str]:
    """Run ``argv``; return (wall seconds, peak RSS KiB, stdout). Raise on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return elapsed, 0, out.decode()


def rss_run(argv: list[str]) -> tuple[float, int, str]:
    """Like :func:`timed` but reaps with ``wait4`` to get the child's own peak RSS."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out_file, stderr=err_file)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(), err_file.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err[-2000:]}")
    return elapsed, usage.ru_maxrss, out


def warm_bytecode() -> None:
    """Compile migratekit and migration_common to .pyc first, as a pip install does.

    Without it (e.g. PYTHONDONTWRITEBYTECODE=1 in a dev shell) every run would recompile the
    sources and measure the compiler, not the copy.
    """
    import compileall
    import importlib.util

    for name in ("migratekit", "migration_common"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                compileall.compile_dir(location, quiet=1)


def churn(size: int, share: float, seed: int) -> list[tuple[int, int]]:
    """Random non-overlapping 64 KiB-aligned extents covering ``share`` of ``size``."""
    rng = random.Random(seed)
    want = int(size * share)
    blocks = size // 65536
    chosen: set[int] = set()
    extents = []
    total = 0
    while total < want:
        run = rng.choice([1, 1, 2, 4, 16])
        start = rng.randrange(0, blocks - run)
        if any(b in chosen for b in range(start - 1, start + run + 1)):
            continue
        chosen.update(range(start, start + run))
        extents.append((start * 65536, run * 65536))
        total += run * 65536
    return sorted(extents)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tcp", action="store_true", help="TCP on loopback instead of unix sockets")
    ap.add_argument(
        "--target",
        choices=["memory", "file"],
        default="memory",
        help="fresh nbdkit memory disk, or qemu-nbd on a fresh sparse raw file",
    )
    ap.add_argument("--cases", default="sparse10,sparse50,dense,incr1pct")
    ap.add_argument("--migratekit-args", default="", help="extra arguments for migratekit copy")
    ap.add_argument("--json", dest="json_out", default=None, help="also write results here")
    args = ap.parse_args()
    for tool in ("nbdkit", "nbdcopy"):
        if not shutil.which(tool):
            print(f"error: {tool} not found (apt-get install nbdkit libnbd-bin)", file=sys.stderr)
            return 2
    warm_bytecode()
    size = int(args.size_gib * GiB)
    size -= size % (1 << 20)
    mk = [
        sys.executable,
        "-m",
        "migratekit",
        "copy",
        "--json",
        "--progress",
        "off",
        "--log-level",
        "WARNING",
        *args.migratekit_args.split(),
    ]
    sources = {
        "sparse10": ["-r", "sparse-random", f"size={size}", "seed=4242", "percent=10"],
        "sparse50": ["-r", "sparse-random", f"size={size}", "seed=4242", "percent=50"],
        "dense": ["-r", "pattern", f"size={size}"],
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="mkbench-") as d:
        tmp = Path(d)
        for case in args.cases.split(","):
            incremental = case == "incr1pct"
            src_argv = sources["sparse50" if incremental else case]
            extents: list[tuple[int, int]] = []
            nbdcopy_src_argv = src_argv
            if incremental:
                extents = churn(size, 0.01, seed=7)
                (tmp / "changed.json").write_text(json.dumps(extents))
                (tmp / "extents.txt").write_text("".join(f"{o} {n} 0\n" for o, n in extents))
                nbdcopy_src_argv = [
                    "-r",
                    "--filter=extentlist",
                    *src_argv[1:],
                    f"extentlist={tmp / 'extents.txt'}",
                ]
            src, src_uri = serve(src_argv, tmp, f"{case}-src", args.tcp)
            nsrc, nsrc_uri = serve(nbdcopy_src_argv, tmp, f"{case}-nsrc", args.tcp)
            row: dict = {
                "case": case,
                "nbdcopy": [],
                "migratekit": [],
                "mk_copy": [],
                "rss_kib": [],
            }
            try:
                for _ in range(args.runs):
                    for tool in ("nbdcopy", "migratekit"):
                        tgt, tgt_uri = fresh_target(args.target, size, tmp, case, args.tcp)
                        try:
                            if tool == "nbdcopy":
                                argv = ["nbdcopy", "--flush", nsrc_uri, tgt_uri]
                                if incremental:
                                    argv[1:1] = ["--destination-is-zero", "-S", "0"]
                                secs, _, _ = timed(argv)
                                row["nbdcopy"].append(secs)
                            else:
                                argv = [*mk, src_uri, tgt_uri]
                                if incremental:
                                    argv[-2:-2] = ["--changed-extents", str(tmp / "changed.json")]
                                secs, rss, out = rss_run(argv)
                                doc = json.loads(out)
                                row["migratekit"].append(secs)
                                row["mk_copy"].append(doc["seconds"])
                                row["rss_kib"].append(rss)
                                row["moved"] = doc["bytes_written"] + doc["bytes_zeroed"]
                        finally:
                            tgt.stop()
            finally:
                src.stop()
                nsrc.stop()
            if incremental:
                row["changed"] = sum(n for _, n in extents)
            results.append(row)
    target_name = "nbdkit memory" if args.target == "memory" else "qemu-nbd raw file"
    full_mk = {r["case"]: statistics.median(r["migratekit"]) for r in results}
    gib = size / GiB
    print(
        f"\nmigratekit vs nbdcopy — {gib:g} GiB virtual, {args.runs} runs, "
        f"{'TCP' if args.tcp else 'unix sockets'}, target {target_name} "
        f"(medians; process wall time)"
    )
    header = (
        f"{'case':<10} {'nbdcopy s':>10} {'GiB/s':>7} {'migratekit s':>13} {'GiB/s':>7} "
        f"{'ratio':>6} {'mk copy s':>10} {'mk RSS MiB':>11}  notes"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        n, m = statistics.median(r["nbdcopy"]), statistics.median(r["migratekit"])
        notes = ""
        if "changed" in r:
            ref = full_mk.get("sparse50")
            notes = f"moved/changed={r['moved'] / r['changed']:.2f}"
            if ref:
                notes += f", time vs full sparse50={m / ref:.2f}"
        r.update(
            nbdcopy_median=n,
            migratekit_median=m,
            ratio=n / m,
            peak_rss_mib=max(r["rss_kib"]) / 1024,
        )
        print(
            f"{r['case']:<10} {n:>10.3f} {gib / n:>7.2f} {m:>13.3f} {gib / m:>7.2f} "
            f"{n / m:>6.2f} {statistics.median(r['mk_copy']):>10.3f} "
            f"{r['peak_rss_mib']:>11.1f}  {notes}"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
