"""A wave of VMs through the whole lab: vcsim, the CloudStack simulator, two real VMAs and the
real OMA (``oma serve`` and one or more ``oma worker`` processes), for tests and the benchmark.

:func:`wave_lab` creates ``vm_count`` powered-on vcsim VMs with two disks each (one qcow2 per
disk in one lab directory that both VMAs read), starts two VMA API servers against the same
vcsim, the OMA with the given settings and database, registers both VMAs and the simulator
through the OMA's API and adds the VMs, alternating between the VMAs. :class:`WaveLab` drives
the phases through the public API (replicate every VM, guest writes, live failover of every
VM) and reads back what users rely on: job rows, replica bytes, the simulator's volumes, the
VMAs' job lists. :class:`RssSampler` samples a process's resident memory from
``/proc/<pid>/status`` while the wave runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .cloudstack import cloudstack_sim
from .labvm import create_lab_vm, lab_disk_sha256, write_lab_disk
from .oma import OmaInfo, add_lab_vms, enroll_vma, oma_services, register_lab
from .procs import wait_until
from .vcsim import vcsim
from .vma import VmaInfo, vma_server

TERMINAL = ("completed", "failed", "stopped")
ADMITTED = ("provisioning", "ready", "replicating")
VM_NETWORK = "VM Network"
MiB = 1 << 20
GRAIN = 64 * 1024  # granularity of the lab disks' dirty bitmaps


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for process {pid}")


class RssSampler:
    """Samples a process's RSS (KiB) every ``interval`` seconds in a thread until stopped."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, LookupError):
                self.samples.append(rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def thirds(self) -> tuple[int, int]:
        """Median RSS (KiB) of the first and of the last third of the samples."""
        n = len(self.samples) // 3
        if n == 0:
            raise ValueError(f"too few RSS samples: {len(self.samples)}")
        first, last = self.samples[:n], self.samples[-n:]
        return int(statistics.median(first)), int(statistics.median(last))


def sha256_file(path: Path, size: int) -> str:
    """sha256 of a file's first ``size`` bytes, zero-padded when it is shorter."""
    digest, left = hashlib.sha256(), size
    with open(path, "rb") as fh:
        while left and (block := fh.read(min(left, MiB))):
            digest.update(block)
            left -= len(block)
    digest.update(bytes(left))
    return digest.hexdigest()


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class PhaseResult:
    """The jobs of one phase (one per VM, in the wave's VM order) and its wall time."""

    jobs: list[dict[str, Any]]
    seconds: float
    max_admitted: int = 0
    waited: set[str] = field(default_factory=set)

    @property
    def bytes_done(self) -> int:
        """Bytes the phase's jobs moved."""
        return sum(int(j["bytes_done"]) for j in self.jobs)

    def per_vm_seconds(self) -> list[float]:
        """Each job's time from request to end (waiting for admission included)."""
        return [
            (_stamp(j["finished_at"]) - _stamp(j["created_at"])).total_seconds() for j in self.jobs
        ]


@dataclass
class WaveLab:
    """The running wave: services, VMs (``vms[i]`` is context ``contexts[i]``) and helpers."""

    tmp: Path
    vc: Any
    sim: Any
    vmas: list[VmaInfo]
    oma: OmaInfo
    vms: list[dict[str, Any]]
    contexts: list[str]
    disk_sizes: list[int]

    @property
    def images(self) -> Path:
        """The lab directory both VMAs read the VMs' disks from."""
        return self.tmp / "images"

    def ok(self, method: str, path: str, body: Any = None, expected: int = 200) -> Any:
        """One OMA API call that must answer ``expected``; returns the body."""
        status, data = self.oma.api(method, path, body)
        assert status == expected, (method, path, status, data)
        return data

    # -- phases ------------------------------------------------------------------------------

    def replicate_all(self, kind: str, timeout: float = 600) -> PhaseResult:
        """Request a ``kind`` replication of every VM at once; wait until all have ended."""
        start = time.monotonic()
        ids = [
            self.ok("POST", "replications", {"vm_context_id": c, "type": kind}, 202)["id"]
            for c in self.contexts
        ]
        return self.wait_jobs(ids, timeout, start=start)

    def wait_jobs(
        self, ids: list[str], timeout: float = 600, *, start: float | None = None
    ) -> PhaseResult:
        """Wait until the jobs ``ids`` have ended (sampling how many were admitted at once
        and which ever waited); ``seconds`` counts from ``start`` (``time.monotonic()``)."""
        start = time.monotonic() if start is None else start
        wanted = set(ids)
        result = PhaseResult(jobs=[], seconds=0.0)

        def all_ended() -> bool:
            rows = self._jobs(wanted)
            result.waited.update(r["id"] for r in rows if r.get("wait_reason"))
            admitted = sum(1 for r in rows if r["status"] in ADMITTED)
            result.max_admitted = max(result.max_admitted, admitted)
            return len(rows) == len(wanted) and all(r["status"] in TERMINAL for r in rows)

        wait_until(all_ended, timeout=timeout, interval=0.2, what=f"{len(ids)} jobs to end")
        result.seconds = time.monotonic() - start
        result.jobs = [self.ok("GET", f"replications/{j}") for j in ids]
        return result

    def _jobs(self, wanted: set[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.ok("GET", f"replications?limit=100&offset={offset}")["items"]
            rows.extend(r for r in page if r["id"] in wanted)
            if len(page) < 100:
                return rows
            offset += 100

    def write_guests(self, seed: int, length: int) -> int:
        """Every VM's guest writes ``length`` random bytes into each disk, at an offset aligned
        to the dirty bitmaps' 64 KiB granularity; returns the bytes written."""
        rng = random.Random(seed)
        written = 0
        for vm in self.vms:
            for disk in vm["disks"]:
                size = int(disk["capacity_bytes"])
                offset = rng.randrange(0, max(1, (size - length) // GRAIN)) * GRAIN
                data = rng.randbytes(min(length, size))
                written += write_lab_disk(self.images, vm["id"], str(disk["key"]), offset, data)
        return written

    def failover_body(self) -> dict[str, Any]:
        """A live failover request onto the simulator's network, offering and template."""
        return {
            "type": "live",
            "network_mappings": {VM_NETWORK: self.sim.network_id},
            "service_offering_id": self.sim.custom_service_offering_id,
            "template_id": self.sim.template_id,
            "keep_macs": True,
            "graceful_timeout_s": 2,
            "force": True,
        }

    def failover_all(self, timeout: float = 600) -> tuple[list[dict[str, Any]], float]:
        """Live failover of every VM at once; the failover records (VM order) and wall time."""
        start = time.monotonic()
        ids = [
            self.ok("POST", f"vm-contexts/{c}/failover", self.failover_body(), 202)["id"]
            for c in self.contexts
        ]

        def all_ended() -> bool:
            return all(
                self.ok("GET", f"failovers/{f}")["status"] in ("completed", "failed") for f in ids
            )

        wait_until(all_ended, timeout=timeout, interval=0.5, what=f"{len(ids)} failovers")
        seconds = time.monotonic() - start
        return [self.ok("GET", f"failovers/{f}") for f in ids], seconds

    # -- what users rely on ------------------------------------------------------------------

    def volumes_by_name(self) -> Counter[str]:
        """How many volumes of each name the simulator holds."""
        from oma.cloudstack import CloudStackClient

        cs = CloudStackClient(self.sim.endpoint, self.sim.api_key, self.sim.secret_key)
        try:
            return Counter(v["name"] for v in cs.list_volumes())
        finally:
            cs.close()

    def replica_mismatches(self) -> list[str]:
        """Disks whose replica (the simulator's backing file) differs from the source disk."""
        from oma.cloudstack import CloudStackClient
        from oma.workflows.replication import volume_name

        cs = CloudStackClient(self.sim.endpoint, self.sim.api_key, self.sim.secret_key)
        try:
            by_name = {v["name"]: v for v in cs.list_volumes()}
        finally:
            cs.close()
        bad = []
        for vm, ctx in zip(self.vms, self.contexts, strict=True):
            for disk in vm["disks"]:
                key, size = str(disk["key"]), int(disk["capacity_bytes"])
                volume = by_name.get(volume_name(ctx, key))
                if volume is None:
                    bad.append(f"{vm['name']}/{key}: no replica volume")
                    continue
                backing = self.sim.state_dir / "volumes" / f"{volume['id']}.img"
                if sha256_file(backing, size) != lab_disk_sha256(vm["images"][key], size=size):
                    bad.append(f"{vm['name']}/{key}: replica differs from the source")
        return bad

    def db_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (no parameters) on the OMA's database, whichever it is."""
        from playhouse.db_url import connect

        url = self.oma.config_env.get("OMA_DATABASE_URL") or (
            f"sqlite:///{self.oma.data_dir / 'oma.db'}"
        )
        db = connect(url)
        try:
            return list(db.execute_sql(sql).fetchall())
        finally:
            db.close()

    def vma_jobs_per_vm(self) -> Counter[str]:
        """How many jobs the VMAs ran (or run) per source VM id, over both VMAs."""
        counts: Counter[str] = Counter()
        for vma in self.vmas:
            for job in vma.get("jobs?limit=1000")["jobs"]:
                counts[job["vm_id"]] += 1
        return counts


def _powered_on_vm(vc: Any, images: Path, name: str, sizes: list[int], seed: int) -> dict:
    from vma.vmware import VSphereClient

    vm = create_lab_vm(vc, images, name, sizes, seed=seed, networks=[VM_NETWORK])
    with VSphereClient(vc.host, vc.username, vc.password, port=vc.port, insecure=True) as client:
        client.power_on(vm["id"])
    return vm


def _stop_vma_jobs(vma: VmaInfo) -> None:
    """Stop the VMA's active jobs and wait for them (≤30 s) before the services stop."""
    if not vma.process.alive():
        return

    def active() -> bool:
        status, body = vma.request("GET", "jobs?limit=1000")
        return status == 200 and any(j["status"] in ("queued", "running") for j in body["jobs"])

    if active():
        vma.stop_active_jobs()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not active(), timeout=30, interval=0.2, what="VMA jobs to stop")


@contextlib.contextmanager
def wave_lab(
    tmp: Path,
    *,
    vm_count: int,
    disk_sizes: list[int],
    workers: int = 1,
    oma_env: Mapping[str, str] | None = None,
    sim_settings: Mapping[str, Any] | None = None,
    poll_interval: float = 0.2,
) -> Iterator[WaveLab]:
    """Start the wave's lab under ``tmp`` (see the module docstring); stopped by PID on exit.

    ``oma_env`` adds OMA settings (caps, ``OMA_DATABASE_URL``, …); ``workers`` is the number
    of ``oma worker`` processes; ``sim_settings`` the simulator's global settings.
    """
    images = tmp / "images"
    with contextlib.ExitStack() as stack:
        vc = stack.enter_context(vcsim(tmp / "vc"))
        sim = stack.enter_context(cloudstack_sim(tmp / "cs", settings=dict(sim_settings or {})))
        vms = [
            _powered_on_vm(vc, images, f"wave-{i:03d}", disk_sizes, seed=500 + i)
            for i in range(vm_count)
        ]
        vmas = [
            stack.enter_context(vma_server(tmp / f"vma{n}", vcenter=vc, lab_dir=images))
            for n in (1, 2)
        ]
        oma = stack.enter_context(
            oma_services(
                tmp / "oma",
                cloudstack=sim,
                poll_interval=poll_interval,
                extra_env=dict(oma_env or {}),
                workers=workers,
            )
        )
        for vma in vmas:
            stack.callback(_stop_vma_jobs, vma)  # before the services stop, also on failure
        first = register_lab(oma, vma=vmas[0], sim=sim)
        second = enroll_vma(oma, vmas[1], "vma-2")
        contexts: dict[str, str] = {}
        for index, vma_id in enumerate((first, second)):
            mine = [vm["id"] for vm in vms[index::2]]
            added = add_lab_vms(oma, vma_id=vma_id, vc=vc, vm_ids=mine)
            contexts.update(zip(mine, added, strict=True))
        yield WaveLab(
            tmp=tmp,
            vc=vc,
            sim=sim,
            vmas=vmas,
            oma=oma,
            vms=vms,
            contexts=[contexts[vm["id"]] for vm in vms],
            disk_sizes=list(disk_sizes),
        )
