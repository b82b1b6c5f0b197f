"""Benchmark a wave through the whole lab: 20 VMs x 2 disks, two VMAs, one OMA.

Starts vcsim, the CloudStack simulator (KVM data-volume limit = the attach budget), two real
VMA API servers and the real OMA (``oma serve`` + ``oma worker`` processes) through
``labtest.wave``; replicates every VM in full at once under the caps, lets every guest write,
replicates incrementally, lets every guest write again and fails every VM over live. Prints
per-VM times (request to end, admission wait included) and aggregate throughput per phase and
the first worker's RSS over the run; exits non-zero when a job or failover did not complete or
a replica differs from its source.

    python benchmarks/wave_bench.py [--vms 20] [--disk-mib 48,16] [--per-vma 6]
        [--database sqlite|postgresql|mariadb] [--workers 1]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from labtest.oma import throwaway_database
from labtest.wave import MiB, PhaseResult, RssSampler, wave_lab


def _phase(name: str, result: PhaseResult) -> bool:
    times = result.per_vm_seconds()
    ok = all(j["status"] == "completed" for j in result.jobs)
    moved = result.bytes_done / MiB
    print(
        f"{name:12s} {len(result.jobs)} jobs in {result.seconds:6.1f} s, "
        f"{moved:8.1f} MiB, {moved / result.seconds:7.1f} MiB/s "
        f"aggregate; per VM min/median/max {min(times):.1f}/{statistics.median(times):.1f}/"
        f"{max(times):.1f} s; at most {result.max_admitted} admitted at once"
        + ("" if ok else "  NOT ALL COMPLETED")
    )
    print("  per VM (s): " + " ".join(f"{t:.1f}" for t in times))
    return ok


def main(argv: list[str] | None = None) -> int:
    """Run the wave once and print its numbers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=20)
    ap.add_argument("--disk-mib", default="48,16", help="the two disks' sizes in MiB")
    ap.add_argument("--per-vma", type=int, default=6, help="OMA_MAX_JOBS_PER_VMA")
    ap.add_argument("--budget", type=int, default=24, help="OMA_ATTACH_BUDGET")
    ap.add_argument("--database", choices=["sqlite", "postgresql", "mariadb"], default="sqlite")
    ap.add_argument("--workers", type=int, default=1, help="oma worker processes")
    ap.add_argument("--write-kib", type=int, default=1024, help="guest writes per disk and round")
    args = ap.parse_args(argv)
    sizes = [int(s) * MiB for s in args.disk_mib.split(",")]
    env = {"OMA_MAX_JOBS_PER_VMA": str(args.per_vma), "OMA_ATTACH_BUDGET": str(args.budget)}
    ok = True
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wave-bench-")))
        if args.database != "sqlite":
            env["OMA_DATABASE_URL"] = stack.enter_context(throwaway_database(args.database))
        started = time.monotonic()
        lab = stack.enter_context(
            wave_lab(
                tmp,
                vm_count=args.vms,
                disk_sizes=sizes,
                workers=args.workers,
                oma_env=env,
                sim_settings={"sim.kvm.max.data.volumes": args.budget},
            )
        )
        print(
            f"wave: {args.vms} VMs x {args.disk_mib} MiB, 2 VMAs, {args.workers} worker(s) on "
            f"{args.database}, per-VMA cap {args.per_vma}, attach budget {args.budget} "
            f"(lab up in {time.monotonic() - started:.1f} s)"
        )
        with RssSampler(lab.oma.worker_process.pid, interval=0.5) as rss:
            ok &= _phase("full", lab.replicate_all("full", timeout=3600))
            lab.write_guests(seed=1, length=args.write_kib * 1024)
            ok &= _phase("incremental", lab.replicate_all("incremental", timeout=3600))
            lab.write_guests(seed=2, length=args.write_kib * 1024)
            records, seconds = lab.failover_all(timeout=3600)
        done = sum(r["status"] == "completed" for r in records)
        downtimes = [r["result"]["downtime_seconds"] for r in records if r.get("result")]
        print(
            f"failover     {done}/{len(records)} completed in {seconds:6.1f} s; downtime per VM "
            f"min/median/max {min(downtimes):.1f}/{statistics.median(downtimes):.1f}/"
            f"{max(downtimes):.1f} s"
            if downtimes
            else f"failover     {done}/{len(records)} completed in {seconds:6.1f} s"
        )
        ok &= done == len(records)
        bad = lab.replica_mismatches()
        print(f"replicas     {len(lab.vms) * len(sizes) - len(bad)} equal, {len(bad)} differ")
        ok &= not bad
        first, last = rss.thirds()
        print(
            f"worker RSS   median first third {first / 1024:.1f} MiB, last third "
            f"{last / 1024:.1f} MiB, max {max(rss.samples) / 1024:.1f} MiB "
            f"({len(rss.samples)} samples)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
