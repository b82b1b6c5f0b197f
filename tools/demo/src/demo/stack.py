"""Start the lab: vcsim, the CloudStack simulator, the VMA API server, the OMA, and a lab VM.

Every service is started through the labtest context managers on a free loopback port with a
generated token, entered on one :class:`contextlib.ExitStack`, so closing the stack (normal end,
failure, Ctrl-C) stops each of them by PID. ``detach()`` hands the processes over to the user
(``--keep``): the stack forgets them and they keep running in their own process groups.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import DemoError

VM_NETWORK = "VM Network"  # the vcsim model's standard portgroup


@dataclass
class Lab:
    """Handles to the running services and the lab VM."""

    workdir: Path
    vc: Any = None
    sim: Any = None
    vma: Any = None
    oma: Any = None
    vm: dict[str, Any] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    kept: contextlib.ExitStack | None = None

    @property
    def images(self) -> Path:
        """Directory of the lab VM's qcow2 images (the VMA's VMA_LAB_DIR)."""
        return self.workdir / "images"

    def pids(self) -> dict[str, int]:
        """PID (= process group) of every service process."""
        out: dict[str, int] = {}
        if self.vc is not None:
            out["vcsim"] = self.vc.pid
        if self.sim is not None:
            out["cloudstack-sim"] = self.sim.process.pid
        if self.vma is not None:
            out["vma-api-server"] = self.vma.process.pid
        if self.oma is not None:
            out["oma-serve"] = self.oma.api_process.pid
            out["oma-worker"] = self.oma.worker_process.pid
        return out

    def close(self) -> None:
        """Stop everything that was started (by PID), in reverse order.

        A job still running (Ctrl-C or a failure mid-sync) is stopped through the VMA first
        and awaited, so its migratekit and source qemu-nbd servers end before their parents.
        """
        if self.vma is not None and self.vma.process.alive():
            with contextlib.suppress(Exception):
                self.vma.stop_active_jobs()
                from labtest.procs import wait_until

                wait_until(lambda: not _active_jobs(self.vma), timeout=30, interval=0.2)
        self.stack.close()

    def detach(self) -> Path:
        """Leave the services running; write ``services.json`` for ``demo stop``; return it."""
        # Keep the popped callbacks referenced: freeing them would finalize the labtest
        # generator context managers, whose cleanup stops the services.
        self.kept = self.stack.pop_all()
        record = {
            "pids": {
                name: {"pid": pid, "cmdline": _cmdline(pid)} for name, pid in self.pids().items()
            },
            "oma_exports": str(self.oma.data_dir / "exports") if self.oma else None,
        }
        path = self.workdir / "services.json"
        path.write_text(json.dumps(record, indent=2))
        if self.vc is not None:
            from .addvm import record_vcenter

            record_vcenter(self.workdir, self.vc)  # for `demo add-vm`
        return path


def _active_jobs(vma: Any) -> list[dict[str, Any]]:
    """The VMA's queued or running jobs."""
    status, body = vma.request("GET", "jobs")
    if status != 200:
        return []
    return [j for j in body["jobs"] if j["status"] in ("queued", "running")]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def _secret_file(path: Path, value: str) -> Path:
    """Write a token to a 0600 file (tokens never go on a command line)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return path


def start(
    workdir: Path,
    disk_sizes: list[int],
    say: Callable[[str, str], None],
    *,
    vm_name: str = "demo-web-01",
    seed: int = 7,
    source: str = "lab",
) -> Lab:
    """Start every service and create the lab VM; on failure stop what was started and raise.

    ``source`` is how the VMA reads the VM: ``lab`` (its lab source: qcow2 + qemu-nbd + dirty
    bitmaps) or ``vsphere`` (its production source: nbdkit with the VDDK stand-in on the job's
    snapshot, changed areas from vcsim's CBT)."""
    from labtest.cloudstack import cloudstack_sim
    from labtest.labvm import vsphere_source_env
    from labtest.oma import oma_services
    from labtest.vcsim import build, vcsim
    from labtest.vma import vma_server

    lab = Lab(workdir=workdir)
    try:
        t = time.monotonic()
        binary = build()
        say("vcsim", f"launcher ready ({binary.name}, {time.monotonic() - t:.1f} s)")
        lab.vc = lab.stack.enter_context(
            vcsim(workdir / "vcsim", extra_env={"VCSIM_LAB_DIR": str(lab.images)})
        )
        say("vcsim", f"vCenter simulator on {lab.vc.url} (pid {lab.vc.pid})")
        lab.sim = lab.stack.enter_context(cloudstack_sim(workdir / "cloudstack"))
        say("cloudstack", f"CloudStack simulator on {lab.sim.endpoint} (pid {lab.sim.process.pid})")
        lab.vm = create_vm(lab, vm_name, disk_sizes, seed)
        sizes = ", ".join(f"{d['key']}: {_size(int(d['capacity_bytes']))}" for d in lab.vm["disks"])
        say("lab VM", f"{vm_name} ({lab.vm['id']}) powered on, disks {sizes}")
        if source == "vsphere":
            vma = vma_server(workdir / "vma", vcenter=lab.vc, env=vsphere_source_env(lab.images))
            how = "vSphere source: nbdkit + VDDK stand-in, CBT"
        else:
            vma = vma_server(workdir / "vma", vcenter=lab.vc, lab_dir=lab.images)
            how = "lab source: qemu-nbd + dirty bitmaps"
        lab.vma = lab.stack.enter_context(vma)
        say("vma", f"VMA API server on {lab.vma.url} (pid {lab.vma.process.pid}), {how}")
        lab.oma = lab.stack.enter_context(oma_services(workdir / "oma", cloudstack=lab.sim))
        say(
            "oma",
            f"OMA API on {lab.oma.url} (pid {lab.oma.api_process.pid}), "
            f"worker pid {lab.oma.worker_process.pid}, SQLite in {lab.oma.data_dir}",
        )
        _secret_file(workdir / "oma-token", lab.oma.admin_token)
        _secret_file(workdir / "vma-token", lab.vma.token)
    except BaseException:
        lab.close()
        raise
    return lab


def create_vm(lab: Lab, name: str, disk_sizes: list[int], seed: int) -> dict[str, Any]:
    """A powered-on vcsim VM with one NIC on "VM Network" and a qcow2 image per disk.

    Like ``labtest.labvm.create_lab_vm`` plus the NIC (so the failover has a network to map
    and a MAC address to keep) and the power-on (a live failover powers it off).
    """
    from labtest.labvm import create_lab_disk, lab_image
    from vma.vmware import VSphereClient

    vc = lab.vc
    with VSphereClient(vc.host, vc.username, vc.password, port=vc.port, insecure=True) as client:
        vm = client.create_vm(name, disks_bytes=list(disk_sizes), networks=[VM_NETWORK])
        images = {}
        for index, disk in enumerate(vm["disks"]):
            key = str(disk["key"])
            images[key] = str(
                create_lab_disk(
                    lab_image(lab.images, vm["id"], key),
                    int(disk["capacity_bytes"]),
                    seed=seed * 1000 + index,
                )
            )
        client.power_on(vm["id"])
    if len(images) != len(disk_sizes):
        raise DemoError(f"vcsim created {len(images)} disks, expected {len(disk_sizes)}")
    return {**vm, "images": images}


def stop_recorded(workdir: Path) -> list[str]:
    """``demo stop``: stop the services a ``--keep`` run recorded, by PID; return what stopped."""
    import signal

    record = json.loads((workdir / "services.json").read_text())
    stopped = []
    for name, item in record["pids"].items():
        pid = int(item["pid"])
        if not item["cmdline"] or _cmdline(pid) != item["cmdline"]:
            continue  # gone, or the PID now belongs to another program
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _cmdline(pid) == item["cmdline"]:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        stopped.append(f"{name} (pid {pid})")
    if record.get("oma_exports"):
        from labtest.oma import stop_exports

        stopped += [f"qemu-nbd export (pid {p})" for p in stop_exports(record["oma_exports"])]
    (workdir / "vcenter.json").unlink(missing_ok=True)  # the login `demo add-vm` used
    return stopped


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
