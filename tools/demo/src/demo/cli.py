"""``python -m demo [--keep] [--workdir DIR] [--small] [--disk-offering custom|fixed]
[--source lab|vsphere]``, ``python -m demo add-vm NAME --workdir DIR [--disks 64M,32M]`` (one
more VM in a kept lab) and ``python -m demo stop --workdir DIR``.

Exit codes: 0 success, 1 a step failed (one line ``demo failed: <reason>``), 2 missing
prerequisites, 130 cancelled (Ctrl-C). Everything started is stopped by PID on every path,
except with ``--keep`` after a success.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30


def _say(tag: str, text: str) -> None:
    print(f"[{tag:>10}] {text}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="demo",
        description="Migrate a lab VM from simulated vSphere to simulated CloudStack through the "
        "real OMA and VMA: full sync, incremental sync with a test failover, live failover, "
        "byte check.",
    )
    p.add_argument("command", nargs="?", default="run", choices=["run", "stop", "add-vm"])
    p.add_argument("name", nargs="?", help="add-vm: name of the new lab VM")
    p.add_argument(
        "--disks",
        default="64M,32M",
        help="add-vm: the new VM's disk sizes, comma-separated (K, M, G) [default: 64M,32M]",
    )
    p.add_argument("--keep", action="store_true", help="leave the services running at the end")
    p.add_argument(
        "--workdir", type=Path, help="where state, images and logs go (default: a new temp dir)"
    )
    p.add_argument(
        "--small", action="store_true", help="64 MiB + 32 MiB disks instead of 1 GiB + 512 MiB"
    )
    p.add_argument(
        "--disk-offering",
        choices=["custom", "fixed"],
        default="custom",
        help="the target's disk offering: custom (replicas sized like their disks) or fixed "
        '("Small", 5 GB: every replica 5 GB, zeroes after the source\'s bytes)',
    )
    p.add_argument(
        "--source",
        choices=["lab", "vsphere"],
        default="lab",
        help="how the VMA reads the VM: lab (qemu-nbd + dirty bitmaps) or vsphere (its "
        "production source: nbdkit with the VDDK stand-in, changed areas from vCenter CBT)",
    )
    p.add_argument("--no-failover", action="store_true", help="stop after the incremental sync")
    p.add_argument(
        "--no-test", action="store_true", help="no test failover during the incremental sync"
    )
    p.add_argument(
        "--progress", choices=["auto", "bar", "plain"], default="auto", help="progress display"
    )
    return p


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "stop":
        return _stop(args.workdir)
    if args.command == "add-vm":
        return _add_vm(args.workdir, args.name, args.disks)
    if args.name:
        print(f"demo failed: unexpected argument {args.name!r}", file=sys.stderr)
        return 2

    from .preflight import missing

    problems = missing(args.source)
    if problems:
        for line in problems:
            print(f"demo: {line}", file=sys.stderr)
        print("demo failed: prerequisites missing (see above)", file=sys.stderr)
        return 2

    from .api import DemoError
    from .flow import Migration
    from .stack import start
    from .summary import render

    signal.signal(signal.SIGTERM, _sigterm)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ossea-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [64 * MiB, 32 * MiB] if args.small else [1 * GiB, 512 * MiB]
    tty = {"auto": None, "bar": True, "plain": False}[args.progress]
    t0 = time.monotonic()
    _say("demo", f"working directory {workdir}")
    lab = None
    ok = False
    try:
        lab = start(workdir, sizes, _say, source=args.source)
        run = Migration(lab, _say, tty=tty, disk_offering=args.disk_offering)
        run.register()
        run.replicate("full", "full")
        run.guest_writes("guest", 24 * MiB if not args.small else 4 * MiB, seed=1)
        if args.no_test:
            run.replicate("incremental", "incremental")
        else:
            run.replicate_with_test("incremental", "incremental")
        if not args.no_failover:
            run.guest_writes("guest", 8 * MiB if not args.small else 2 * MiB, seed=2)
            run.failover()
        run.verify()
        render(run.out, time.monotonic() - t0)
        ok = True
    except KeyboardInterrupt:
        print("demo cancelled: stopping everything it started", file=sys.stderr)
        return 130
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        print(f"logs: {workdir}", file=sys.stderr)
        return 1
    except Exception as exc:  # the one-line reason; details are in the services' logs
        print(
            f"demo failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            file=sys.stderr,
        )
        print(f"logs: {workdir}", file=sys.stderr)
        return 1
    finally:
        if lab is not None:
            if ok and args.keep:
                _keep(lab)
            else:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
                lab.close()
                signal.signal(signal.SIGINT, signal.default_int_handler)
                if ok and args.workdir is None:
                    shutil.rmtree(workdir, ignore_errors=True)
    if args.keep:
        # The labtest context managers are generators: if Python finalized them at exit, their
        # cleanup would stop the services. Leave without finalizing anything.
        _say("demo", "services left running (see above)")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    _say("demo", "all services stopped")
    return 0


def _keep(lab) -> None:
    record = lab.detach()
    w = lab.workdir
    print()
    print("The lab keeps running:")
    print(f"  OMA console    {lab.oma.url}/   sign in with the API token in {w / 'oma-token'}")
    print(f"  OMA API        {lab.oma.url}/api/v1   token in {w / 'oma-token'}")
    print(f"  OMA CA         {lab.oma.ca_file}   verifies the API's HTTPS certificate")
    print(
        f"                 e.g. OMA_URL={lab.oma.url} OMA_CA_FILE={lab.oma.ca_file} "
        f"OMA_TOKEN=$(cat {w / 'oma-token'}) oma vms"
    )
    print(f"  VMA API        {lab.vma.url}/api/v1   token in {w / 'vma-token'}")
    print(f"  CloudStack sim {lab.sim.endpoint}   keys in {lab.sim.state_dir / 'credentials.json'}")
    print(f"  vCenter (sim)  {lab.vc.url}   (login in the OMA's saved vmware-credentials)")
    print(f"  logs           {w}")
    for name, pid in lab.pids().items():
        print(f"  {name:<15}pid {pid}")
    print(
        f"Another lab VM: python -m demo add-vm NAME --workdir {w} [--disks 64M,32M], "
        "then `oma discover --add NAME`"
    )
    print(f"Stop everything: python -m demo stop --workdir {w}   (reads {record.name})")


def _add_vm(workdir: Path | None, name: str | None, disks: str) -> int:
    from .addvm import add_vm, parse_sizes
    from .api import DemoError

    if workdir is None or not name:
        print("demo failed: add-vm needs NAME and --workdir of a --keep run", file=sys.stderr)
        return 2
    try:
        vm = add_vm(workdir, name, parse_sizes(disks))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{d['key']}: {int(d['capacity_bytes']) >> 20} MiB" for d in vm["disks"])
    _say("lab VM", f"{name} ({vm['id']}) powered on, disks {sizes}")
    print(f"Add it to the OMA: oma discover --add {name}   (then: oma replicate {name} --watch)")
    return 0


def _stop(workdir: Path | None) -> int:
    if workdir is None or not (workdir / "services.json").exists():
        print(
            "demo failed: stop needs --workdir of a --keep run (with services.json)",
            file=sys.stderr,
        )
        return 2
    from .stack import stop_recorded

    for item in stop_recorded(workdir):
        _say("stop", item)
    return 0
