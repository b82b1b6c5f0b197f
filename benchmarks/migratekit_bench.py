"""Benchmark: ``migratekit copy`` against ``nbdcopy`` on the same sources, warm and fresh targets.

Run: ``python benchmarks/migratekit_bench.py [--sizes-gib 1,8] [--runs 3] [--states warm,fresh]
[--tcp] [--target memory|file] [--tls-cases dense,sparse50]`` (``scripts/nox -s bench --
migratekit`` runs the defaults). Needs nbdkit and nbdcopy (libnbd-bin).

Cases (sources served by nbdkit, fixed seeds):

* ``sparse10`` / ``sparse50``: ``sparse-random`` with ~10 % / ~50 % data;
* ``dense``: ``pattern`` (every byte is data);
* ``incr1pct``: the sparse50 source with 1 % of the disk changed (random extents): migratekit
  copies ``--changed-extents``; nbdcopy copies the same ranges through nbdkit's ``extentlist``
  filter with ``--destination-is-zero -S 0`` (the way nbdcopy does incrementals).

Transports: the source is always plaintext on a unix socket (or TCP with ``--tcp``), as the
VMA's own disk server is; the target is reached the same way (``unix``/``tcp`` rows) and, for
the ``--tls-cases``, also over TCP with TLS (``tls`` rows), as the OMA's replica exports are:
server certificate from a throw-away OMA CA, client certificate required (``verify-peer``, and
for a qemu-nbd target only that client admitted through ``tls-authz``). nbdcopy gets the
client files as ``nbds://…?tls-certificates=DIR``, migratekit as ``MIGRATEKIT_TLS_*``.

Target states:

* ``fresh``: every copy goes to a new empty target (an ``nbdkit memory`` disk allocates its
  pages as they are written, so the target's work is part of the time);
* ``warm``: one target per case, filled once by an untimed copy, then overwritten by every
  timed copy: the target answers as fast as it can and the copy tool is the limit.

nbdcopy and migratekit alternate within each run. Times are wall-clock seconds of the whole
process (migratekit's Python start-up included); GiB/s are of the virtual size (what a user
sees); CPU-s/GiB is the tool's own user + system CPU (``wait4``) per GiB of virtual size.
Also printed: migratekit's own copy time (from ``--json``), its peak RSS, for the incremental
case bytes moved / changed bytes, and the load average around each row (the machine may be
shared: treat differences within the printed spread as noise).
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


class Tls:
    """Throw-away TLS files: an OMA CA, the server's directory (qemu/nbdkit layout) and the
    client's (libnbd layout: ca-cert.pem, client-cert.pem, client-key.pem)."""

    def __init__(self, tmp: Path) -> None:
        from oma.nbd.tls import server_credentials
        from oma.pki import load_ca, vma_common_name, write_private

        self.server_dir = server_credentials(tmp / "oma", ["127.0.0.1"])
        ca = load_ca(tmp / "oma")
        issued = ca.issue_client(vma_common_name("bench"))
        self.subject = issued.subject
        self.client_dir = tmp / "client-tls"
        write_private(self.client_dir / "client-key.pem", issued.key_pem)
        (self.client_dir / "client-cert.pem").write_bytes(issued.cert_pem)
        (self.client_dir / "ca-cert.pem").write_bytes(ca.cert_pem)
        self.env = {
            **os.environ,
            "MIGRATEKIT_TLS_CA": str(self.client_dir / "ca-cert.pem"),
            "MIGRATEKIT_TLS_CERT": str(self.client_dir / "client-cert.pem"),
            "MIGRATEKIT_TLS_KEY": str(self.client_dir / "client-key.pem"),
        }

    def nbdcopy_uri(self, uri: str) -> str:
        """The same export for libnbd, with the client's files."""
        return f"{uri}?tls-certificates={self.client_dir}" if uri.startswith("nbds:") else uri


def serve(
    argv: list[str], tmp: Path, name: str, tcp: bool, tls: Tls | None = None
) -> tuple[ManagedProcess, str]:
    """Start ``nbdkit ARGV`` on a unix socket (or TCP; TCP with TLS required when ``tls``)
    and return it with its URI."""
    if tcp or tls:
        port = free_port()
        secure = []
        if tls is not None:
            secure = ["--tls=require", f"--tls-certificates={tls.server_dir}", "--tls-verify-peer"]
        proc = ManagedProcess(
            ["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(port), *secure, *argv],
            log_path=tmp / f"{name}.log",
            name=name,
        ).start()
        proc.wait_port(port)
        return proc, f"{'nbds' if tls else 'nbd'}://127.0.0.1:{port}/"
    sock = tmp / f"{name}.sock"
    if sock.exists():
        sock.unlink()
    proc = ManagedProcess(
        ["nbdkit", "-f", "-U", str(sock), *argv], log_path=tmp / f"{name}.log", name=name
    ).start()
    proc.wait_path(sock)
    return proc, f"nbd+unix:///?socket={sock}"


def fresh_target(
    kind: str, size: int, tmp: Path, case: str, tcp: bool, tls: Tls | None = None
) -> tuple[ManagedProcess, str]:
    """A new empty target: nbdkit memory, or qemu-nbd (O_DIRECT, native AIO) on a raw file."""
    if kind == "memory":
        return serve(["memory", f"size={size}"], tmp, f"{case}-dst", tcp, tls)
    image = tmp / f"{case}-dst.raw"
    if image.exists():
        image.unlink()
    with open(image, "wb") as fh:
        fh.truncate(size)
    argv = ["qemu-nbd", "-f", "raw", "-x", "", "-t", "-e", "4", "--cache=none", "--aio=native"]
    if tls is not None:
        from oma.nbd.tls import qemu_nbd_args

        argv += qemu_nbd_args(tls.server_dir, tls.subject)
    if tcp or tls:
        port = free_port()
        proc = ManagedProcess(
            [*argv, "-b", "127.0.0.1", "-p", str(port), str(image)],
            log_path=tmp / "qemu-nbd.log",
            name="qemu-nbd",
        ).start()
        proc.wait_port(port)
        return proc, f"{'nbds' if tls else 'nbd'}://127.0.0.1:{port}/"
    sock = tmp / f"{case}-dst.sock"
    proc = ManagedProcess(
        [*argv, "-k", str(sock), str(image)], log_path=tmp / "qemu-nbd.log", name="qemu-nbd"
    ).start()
    proc.wait_path(sock)
    return proc, f"nbd+unix:///?socket={sock}"


class Run:
    """One finished tool run: wall seconds, user + system CPU seconds, peak RSS, stdout."""

    __slots__ = ("cpu", "out", "rss_kib", "wall")

    def __init__(self, wall: float, cpu: float, rss_kib: int, out: str) -> None:
        self.wall, self.cpu, self.rss_kib, self.out = wall, cpu, rss_kib, out


def run_tool(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``argv``, reaping it with ``wait4`` for its own CPU time and peak RSS."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out_file, stderr=err_file, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(), err_file.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err[-2000:]}")
    return Run(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out)


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


def sources(size: int) -> dict[str, list[str]]:
    """nbdkit arguments of each full-copy source."""
    return {
        "sparse10": ["-r", "sparse-random", f"size={size}", "seed=4242", "percent=10"],
        "sparse50": ["-r", "sparse-random", f"size={size}", "seed=4242", "percent=50"],
        "dense": ["-r", "pattern", f"size={size}"],
    }


def bench_case(
    case: str,
    size: int,
    state: str,
    args: argparse.Namespace,
    mk: list[str],
    tmp: Path,
    tls: Tls | None = None,
) -> dict:
    """Run one case at one size against one target state (over TLS with ``tls``); return its
    raw measurements."""
    incremental = case == "incr1pct"
    src_argv = sources(size)["sparse50" if incremental else case]
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
    transport = "tls" if tls else ("tcp" if args.tcp else "unix")
    row: dict = {"case": case, "size": size, "state": state, "nbdcopy": [], "migratekit": []}
    row["transport"] = transport
    row["mk_copy"], row["rss_kib"] = [], []
    row["load_before"] = os.getloadavg()[0]

    def argv_for(tool: str, tgt_uri: str) -> list[str]:
        if tool == "nbdcopy":
            argv = ["nbdcopy", "--flush", nsrc_uri, tls.nbdcopy_uri(tgt_uri) if tls else tgt_uri]
            if incremental:
                argv[1:1] = ["--destination-is-zero", "-S", "0"]
            return argv
        argv = [*mk, src_uri, tgt_uri]
        if incremental:
            argv[-2:-2] = ["--changed-extents", str(tmp / "changed.json")]
        return argv

    def timed(tool: str, tgt_uri: str) -> None:
        env = tls.env if tls is not None and tool == "migratekit" else None
        result = run_tool(argv_for(tool, tgt_uri), env)
        row[tool].append((result.wall, result.cpu))
        if tool == "migratekit":
            doc = json.loads(result.out)
            row["mk_copy"].append(doc["seconds"])
            row["rss_kib"].append(result.rss_kib)
            row["moved"] = doc["bytes_written"] + doc["bytes_zeroed"]

    warm = None
    try:
        if state == "warm":
            warm, warm_uri = fresh_target(args.target, size, tmp, case, args.tcp, tls)
            # fill it once (the full source, so an incremental overwrites allocated pages)
            run_tool(["nbdcopy", src_uri, tls.nbdcopy_uri(warm_uri) if tls else warm_uri])
        for _ in range(args.runs):
            for tool in ("nbdcopy", "migratekit"):
                if warm is not None:
                    timed(tool, warm_uri)
                    continue
                tgt, tgt_uri = fresh_target(args.target, size, tmp, case, args.tcp, tls)
                try:
                    timed(tool, tgt_uri)
                finally:
                    tgt.stop()
    finally:
        if warm is not None:
            warm.stop()
        src.stop()
        nsrc.stop()
    row["load_after"] = os.getloadavg()[0]
    if incremental:
        row["changed"] = sum(n for _, n in extents)
    return row


def report(results: list[dict], args: argparse.Namespace) -> None:
    """Print the medians table (and the spread of the ratio over the runs)."""
    target_name = "nbdkit memory" if args.target == "memory" else "qemu-nbd raw file"
    print(
        f"\nmigratekit vs nbdcopy — {args.runs} runs, {'TCP' if args.tcp else 'unix sockets'}, "
        f"target {target_name} (medians; process wall time; CPU = user + system of the tool)"
    )
    header = (
        f"{'case':<9} {'GiB':>4} {'target':<6} {'link':<4} {'nbdcopy s':>9} {'mk s':>7} "
        f"{'ratio':>5} {'(min-max)':>11} {'CPU-s/GiB nc':>12} {'mk':>6} {'mk copy s':>9} "
        f"{'RSS MiB':>7} {'load':>9}  notes"
    )
    print(header)
    print("-" * len(header))
    full_mk = {
        (r["size"], r["state"]): statistics.median(w for w, _ in r["migratekit"])
        for r in results
        if r["case"] == "sparse50" and r["transport"] != "tls"
    }
    for r in results:
        gib = r["size"] / GiB
        n = statistics.median(w for w, _ in r["nbdcopy"])
        m = statistics.median(w for w, _ in r["migratekit"])
        nc_cpu = statistics.median(c for _, c in r["nbdcopy"]) / gib
        mk_cpu = statistics.median(c for _, c in r["migratekit"]) / gib
        ratios = [a[0] / b[0] for a, b in zip(r["nbdcopy"], r["migratekit"], strict=True)]
        notes = ""
        if "changed" in r:
            notes = f"moved/changed={r['moved'] / r['changed']:.2f}"
            ref = full_mk.get((r["size"], r["state"]))
            if ref:
                notes += f", time vs full sparse50={m / ref:.2f}"
        r.update(
            nbdcopy_median=n,
            migratekit_median=m,
            ratio=n / m,
            nbdcopy_cpu_per_gib=nc_cpu,
            migratekit_cpu_per_gib=mk_cpu,
            peak_rss_mib=max(r["rss_kib"]) / 1024,
        )
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        load = f"{r['load_before']:.1f}/{r['load_after']:.1f}"
        print(
            f"{r['case']:<9} {gib:>4g} {r['state']:<6} {r['transport']:<4} {n:>9.3f} {m:>7.3f} "
            f"{n / m:>5.2f} {spread:>11} {nc_cpu:>12.3f} {mk_cpu:>6.3f} "
            f"{statistics.median(r['mk_copy']):>9.3f} {r['peak_rss_mib']:>7.1f} {load:>9}  "
            f"{notes}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gib", default="1,8", help="virtual sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--states", default="warm,fresh", help="target states: warm, fresh or both")
    ap.add_argument("--tcp", action="store_true", help="TCP on loopback instead of unix sockets")
    ap.add_argument(
        "--target",
        choices=["memory", "file"],
        default="memory",
        help="nbdkit memory disk, or qemu-nbd on a sparse raw file",
    )
    ap.add_argument("--cases", default="dense,sparse50,sparse10,incr1pct")
    ap.add_argument(
        "--tls-cases",
        default="dense,sparse50",
        help="cases also run with the target over TCP + TLS (empty: none)",
    )
    ap.add_argument("--migratekit-args", default="", help="extra arguments for migratekit copy")
    ap.add_argument("--json", dest="json_out", default=None, help="also write results here")
    args = ap.parse_args()
    for tool in ("nbdkit", "nbdcopy"):
        if not shutil.which(tool):
            print(f"error: {tool} not found (apt-get install nbdkit libnbd-bin)", file=sys.stderr)
            return 2
    warm_bytecode()
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
    results = []
    with tempfile.TemporaryDirectory(prefix="mkbench-") as d:
        tmp = Path(d)
        tls_cases = [c for c in args.tls_cases.split(",") if c]
        tls = Tls(tmp) if tls_cases else None
        for size_gib in args.sizes_gib.split(","):
            size = int(float(size_gib) * GiB)
            size -= size % (1 << 20)
            for case in args.cases.split(","):
                for state in args.states.split(","):
                    results.append(bench_case(case, size, state, args, mk, tmp))
                    if case in tls_cases:
                        results.append(bench_case(case, size, state, args, mk, tmp, tls))
    report(results, args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
