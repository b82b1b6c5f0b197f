"""The whole lab for end-to-end tests, through real processes only.

``lab`` starts vcsim, the CloudStack simulator, a powered-on lab VM (two small qcow2 disks and a
NIC), the real VMA API server and the real OMA (``oma serve`` + ``oma worker``, SQLite), each on
a free loopback port with generated tokens, and stops every one of them by PID afterwards. The
test drives the OMA through its public HTTP API (:class:`E2eLab` helpers) and checks bytes,
API state, CloudStack state and processes.

``vsphere_lab`` is the same lab with the VMA's production source: the VMA has no lab directory,
so it serves the VM's disks with nbdkit and the VDDK stand-in (tools/vddk) on the job's vCenter
snapshot and plans incrementals from vcsim's QueryChangedDiskAreas, which reports the areas
the lab wrote (the disks' write journals, ``VCSIM_LAB_DIR``).

``throttled_lab`` puts a slow link between the VMA and the OMA's replica exports, the way a
WAN sits between the two sites: the OMA advertises its exports on 127.0.0.2
(``OMA_NBD_ADVERTISE_HOST``) where :class:`SlowLink` relays each port of the OMA's export range
to 127.0.0.1 with the VMA → OMA direction limited to a few MiB/s. Every byte still goes from
the real qemu-nbd source through real migratekit into the real qemu-nbd export; a copy just
takes long enough for a crash test to act in the middle of it (each test also checks that the
copy really was under way).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labtest.cloudstack import cloudstack_sim
from labtest.labvm import (
    create_lab_disk,
    lab_disk_sha256,
    lab_image,
    vsphere_source_env,
    write_lab_disk,
)
from labtest.oma import enroll_vma, oma_services
from labtest.procs import free_port, wait_until
from labtest.vcsim import vcsim
from labtest.vma import vma_server

MiB = 1 << 20
DISK_SIZES = [48 * MiB, 16 * MiB]
VM_NETWORK = "VM Network"
TERMINAL = ("completed", "failed", "stopped")
FAILOVER_DONE = ("completed", "failed")
SLOW_LINK_HOST = "127.0.0.2"
SLOW_LINK_RATE = 4 * MiB  # bytes per second, VMA → OMA
EXPORT_PORTS = 12  # size of the OMA's export port range in these tests


def sha256_file(path: Path, size: int) -> str:
    """sha256 of a file's first ``size`` bytes, zero-padded when it is shorter."""
    digest, left = hashlib.sha256(), size
    with open(path, "rb") as fh:
        while left:
            block = fh.read(min(left, MiB))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    digest.update(bytes(left))
    return digest.hexdigest()


class SlowLink:
    """A TCP relay ``SLOW_LINK_HOST:p`` → ``127.0.0.1:p`` for every port ``p`` given.

    Bytes towards the server are limited to ``rate`` bytes/s (all connections together; None =
    unlimited, changeable at any time); answers flow at full speed. Runs an asyncio loop in a
    thread; :meth:`stop` closes every listener and connection.
    """

    def __init__(self, ports: list[int], rate: float | None, host: str = SLOW_LINK_HOST) -> None:
        self.ports, self.rate, self.host = ports, rate, host
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._next_slot = 0.0
        self.relayed = 0

    def start(self) -> SlowLink:
        """Listen on every port (raises when one is taken)."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        return self

    async def _listen(self) -> None:
        for port in self.ports:
            self._servers.append(await asyncio.start_server(self._client, self.host, port))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pump(reader, up_writer, limited=True),
            self._pump(up_reader, writer, limited=False),
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, limited: bool
    ) -> None:
        try:
            while data := await reader.read(64 * 1024):
                if limited and self.rate:
                    now = self.loop.time()
                    start = max(now, self._next_slot)
                    self._next_slot = start + len(data) / self.rate
                    await asyncio.sleep(self._next_slot - now)
                if limited:
                    self.relayed += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def stop(self) -> None:
        """Close listeners and connections; stop the loop and its thread."""

        async def _close() -> None:
            for server in self._servers:
                server.close()
            for writer in list(self._writers):
                writer.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_close(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


@dataclass
class E2eLab:
    """The running lab and helpers that go through the OMA's public API."""

    tmp: Path
    vc: Any
    sim: Any
    vma: Any
    oma: Any
    vm: dict[str, Any]
    context_id: str = ""
    link: SlowLink | None = None
    known_nbd_pids: set[int] = field(default_factory=set)

    @property
    def images(self) -> Path:
        """The VMA's lab directory."""
        return self.tmp / "images"

    # -- the OMA API ----------------------------------------------------------------------

    def ok(self, method: str, path: str, body: Any = None, expected: int = 200) -> Any:
        """One OMA API call that must answer ``expected``; returns the body."""
        status, data = self.oma.api(method, path, body)
        assert status == expected, (method, path, status, data)
        return data

    def register(self) -> str:
        """VMA, CloudStack target, saved vCenter login, discovery, add the VM → context id."""
        # enrolled: HTTPS with a certificate from the OMA CA, which NBD over TLS admits
        vma = self.ok("GET", f"vma-appliances/{enroll_vma(self.oma, self.vma, 'vma-e2e')}")
        self.ok(
            "POST",
            "cloudstack-targets",
            {
                "name": "cs-e2e",
                "endpoint": self.sim.endpoint,
                "api_key": self.sim.api_key,
                "secret_key": self.sim.secret_key,
                "zone_id": self.sim.zone_id,
                "oma_vm_id": self.sim.oma_vm_id,
                "disk_offering_id": self.sim.custom_disk_offering_id,
                "is_default": True,
            },
            201,
        )
        cred = self.ok(
            "POST",
            "vmware-credentials",
            {
                "name": "vcsim",
                "vcenter": f"{self.vc.host}:{self.vc.port}",
                "username": self.vc.username,
                "password": self.vc.password,
                "insecure": True,
            },
            201,
        )
        found = self.ok("POST", "discovery", {"vma_id": vma["id"], "credential_id": cred["id"]})
        mine = [v for v in found["vms"] if v["id"] == self.vm["id"]]
        assert len(mine) == 1 and mine[0]["vm_context_id"] is None, found
        added = self.ok(
            "POST",
            "discovery/add",
            {"vma_id": vma["id"], "credential_id": cred["id"], "vms": mine},
            201,
        )
        self.context_id = added["added"][0]["id"]
        return self.context_id

    def replicate(self, kind: str = "auto") -> str:
        """Request a replication of the lab VM → job id."""
        body = {"vm_context_id": self.context_id, "type": kind}
        return self.ok("POST", "replications", body, 202)["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /replications/{id}``."""
        return self.ok("GET", f"replications/{job_id}")

    def wait_job(
        self, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 180
    ) -> dict[str, Any]:
        """Poll the job through the API until its status is one of ``statuses``."""
        wait_until(
            lambda: self.job(job_id)["status"] in statuses,
            timeout=timeout,
            interval=0.1,
            what=f"job {job_id} to reach {statuses}",
        )
        return self.job(job_id)

    def context(self) -> dict[str, Any]:
        """``GET /vm-contexts/{id}``."""
        return self.ok("GET", f"vm-contexts/{self.context_id}")

    def db(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the OMA's SQLite database (what the API reports from)."""
        path = self.oma.data_dir / "oma.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()

    # -- the VMA (observed, to act at the right moment) ------------------------------------

    def vma_job(self, job_id: str) -> dict[str, Any] | None:
        """The VMA's view of a job (None while it does not know it)."""
        status, body = self.vma.request("GET", f"jobs/{job_id}")
        return body if status == 200 else None

    def wait_copying(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until migratekit runs for the job and has copied something but not everything."""
        box: dict[str, Any] = {}

        def copying() -> bool:
            job = self.vma_job(job_id)
            if not job or job.get("status") != "running" or not job.get("pid"):
                return False
            p = job.get("progress") or {}
            box["job"] = job
            return p.get("phase") == "copy" and 0 < p.get("bytes_done", 0) < p.get("bytes_total", 0)

        wait_until(copying, timeout=timeout, interval=0.02, what=f"job {job_id} mid-copy")
        return box["job"]

    # -- source and target state ---------------------------------------------------------

    def write(self, disk_index: int, offset: int, length: int, seed: int) -> int:
        """The guest writes ``length`` random bytes into one source disk."""
        key = str(self.vm["disks"][disk_index]["key"])
        data = random.Random(seed).randbytes(length)
        return write_lab_disk(self.images, self.vm["id"], key, offset, data)

    def volumes(self) -> dict[str, dict[str, Any]]:
        """CloudStack's view of each replica volume, by disk key (via the OMA's naming)."""
        from oma.cloudstack import CloudStackClient
        from oma.workflows.replication import volume_name

        cs = CloudStackClient(
            self.sim.endpoint, self.sim.api_key, self.sim.secret_key, poll_interval=0.05
        )
        try:
            out = {}
            for d in self.vm["disks"]:
                found = cs.list_volumes(name=volume_name(self.context_id, str(d["key"])))
                assert len(found) == 1, found
                out[str(d["key"])] = found[0]
            return out
        finally:
            cs.close()

    def assert_replicas_equal(self) -> None:
        """Every replica volume's backing file holds exactly its source disk's bytes."""
        volumes = self.volumes()
        for d in self.vm["disks"]:
            key, size = str(d["key"]), int(d["capacity_bytes"])
            backing = self.sim.state_dir / "volumes" / f"{volumes[key]['id']}.img"
            assert sha256_file(backing, size) == lab_disk_sha256(
                self.vm["images"][key], size=size
            ), f"replica of disk {key} differs from the source"

    def source_snapshots(self) -> list[dict[str, Any]]:
        """Snapshots the migration left on the source VM."""
        from vma.vmware import VSphereClient

        vc = self.vc
        with VSphereClient(vc.host, vc.username, vc.password, port=vc.port, insecure=True) as c:
            return [s for s in c.list_snapshots(self.vm["id"])]

    def power_state(self) -> str:
        """The source VM's power state in vcsim."""
        from vma.vmware import VSphereClient

        vc = self.vc
        with VSphereClient(vc.host, vc.username, vc.password, port=vc.port, insecure=True) as c:
            return c.power_state(self.vm["id"])

    def qemu_nbd_pids(self) -> set[int]:
        """Running qemu-nbd processes serving a file of this test (source images or replicas)."""
        roots = (str(self.tmp),)  # lab images, and the simulator's by-id links and files
        pids = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not argv or not argv[0].endswith(b"qemu-nbd"):
                continue
            text = b" ".join(argv).decode(errors="replace")
            if any(r in text for r in roots):
                pids.add(int(proc.name))
        return pids

    def settled(self, exports: set[int]) -> None:
        """The VMA cleaned up after its job: only ``exports`` serve the test's files, no snapshot.

        The VMA stops its source servers and removes the sync snapshot once migratekit has
        exited, which may be a moment after the OMA saw every disk complete: wait up to 30 s.
        """
        wait_until(
            lambda: self.qemu_nbd_pids() == exports,
            timeout=30,
            interval=0.2,
            what=f"only the exports {sorted(exports)} to run qemu-nbd "
            f"(now {sorted(self.qemu_nbd_pids())})",
        )
        wait_until(
            lambda: self.source_snapshots() == [],
            timeout=30,
            interval=0.2,
            what="no snapshot left on the source VM",
        )

    def oma_export_pids(self) -> set[int]:
        """PIDs of the replica exports the OMA records as running."""
        from oma.nbd import ExportManager

        manager = ExportManager(state_dir=self.oma.data_dir / "exports")
        return {e.pid for e in manager.list_running()}

    # -- live failover ---------------------------------------------------------------------

    def failover_body(self) -> dict:
        """A live failover request mapping the VM's network to the simulator's network."""
        return {
            "type": "live",
            "network_mappings": {"VM Network": self.sim.network_id},
            "service_offering_id": self.sim.custom_service_offering_id,
            "template_id": self.sim.template_id,
            "keep_macs": True,
            "graceful_timeout_s": 2,
            "force": True,
        }

    def start_failover(self) -> dict:
        """``POST /vm-contexts/{id}/failover`` (live) → the 202 failover record."""
        return self.ok("POST", f"vm-contexts/{self.context_id}/failover", self.failover_body(), 202)

    def wait_failover(self, failover_id: str, timeout: float = 180) -> dict:
        """Poll ``GET /failovers/{id}`` until it is completed or failed."""
        wait_until(
            lambda: self.ok("GET", f"failovers/{failover_id}")["status"] in FAILOVER_DONE,
            timeout=timeout,
            interval=0.2,
            what=f"failover {failover_id}",
        )
        return self.ok("GET", f"failovers/{failover_id}")

    def assert_failed_over(self, rec: dict) -> None:
        """State after a completed live failover: target running on the replicas, bytes equal."""
        from oma.cloudstack import CloudStackClient

        assert rec["status"] == "completed", rec
        steps = rec["steps"]
        assert steps and all(s["status"] in ("done", "completed", "skipped") for s in steps), steps
        result = rec["result"]
        assert result["downtime_seconds"] > 0, rec
        assert rec["final_sync_job_id"] == result["final_sync_job_id"], rec
        ctx = self.context()
        assert ctx["state"] == "failed_over_live", ctx
        assert self.power_state() == "poweredOff"
        self.settled(set())  # no source server and no snapshot left either

        volumes = self.volumes()
        vm_ids = {v.get("virtualmachineid") for v in volumes.values()}
        # every replica is attached to the new VM, none to the OMA or anywhere else
        assert vm_ids == {result["target_vm_id"]} and self.sim.oma_vm_id not in vm_ids, volumes
        target_vm_id = result["target_vm_id"]
        api_volumes = {v["disk_key"]: v for v in ctx["volumes"]}
        assert {k: v["attached_vm_id"] for k, v in api_volumes.items()} == {
            k: target_vm_id for k in volumes
        }
        cs = CloudStackClient(
            self.sim.endpoint, self.sim.api_key, self.sim.secret_key, poll_interval=0.05
        )
        try:
            (target,) = [v for v in cs.list_vms() if v["id"] == target_vm_id]
            attached = cs.list_volumes(vm_id=target_vm_id)
        finally:
            cs.close()
        assert target["state"] == "Running", target
        keys = sorted((str(d["key"]) for d in self.vm["disks"]), key=int)
        by_device = {int(v["deviceid"]): v["id"] for v in attached}
        assert by_device[0] == volumes[keys[0]]["id"]  # the boot disk's replica is the ROOT
        assert sorted(by_device) == list(range(len(keys)))  # the template's ROOT is gone
        assert [by_device[i] for i in range(1, len(keys))] == [volumes[k]["id"] for k in keys[1:]]
        nic_macs = {n["mac"] for n in self.vm["nics"]}
        assert nic_macs and {n.get("macaddress") for n in target["nic"]} == nic_macs  # keep_macs
        self.assert_replicas_equal()
        assert self.oma_export_pids() == set()  # exports of the replicas were stopped


def create_vm(vc: Any, images: Path, name: str, sizes: list[int], seed: int) -> dict[str, Any]:
    """A powered-on vcsim VM with a NIC on "VM Network" and one qcow2 image per disk."""
    from vma.vmware import VSphereClient

    with VSphereClient(vc.host, vc.username, vc.password, port=vc.port, insecure=True) as client:
        vm = client.create_vm(name, disks_bytes=list(sizes), networks=[VM_NETWORK])
        paths = {}
        for index, disk in enumerate(vm["disks"]):
            key = str(disk["key"])
            paths[key] = str(
                create_lab_disk(
                    lab_image(images, vm["id"], key),
                    int(disk["capacity_bytes"]),
                    seed=seed * 1000 + index,
                )
            )
        client.power_on(vm["id"])
    return {**vm, "images": paths}


@contextlib.contextmanager
def make_lab(tmp: Path, *, slow_link: bool = False, source: str = "lab") -> Iterator[E2eLab]:
    """Start the lab under ``tmp``; everything is stopped by PID when the block exits.

    ``source`` ``lab`` (the VMA's lab source) or ``vsphere`` (nbdkit + the VDDK stand-in)."""
    oma_env: dict[str, str] = {}
    link = None
    with contextlib.ExitStack() as stack:
        if slow_link:
            lo = free_port()
            ports = list(range(lo, lo + EXPORT_PORTS))
            link = SlowLink(ports, SLOW_LINK_RATE).start()
            stack.callback(link.stop)
            oma_env = {
                "OMA_NBD_PORT_RANGE": f"{ports[0]}-{ports[-1]}",
                "OMA_NBD_ADVERTISE_HOST": SLOW_LINK_HOST,
            }
        images = tmp / "images"
        vc = stack.enter_context(vcsim(tmp / "vc", extra_env={"VCSIM_LAB_DIR": str(images)}))
        sim = stack.enter_context(cloudstack_sim(tmp / "cs"))
        vm = create_vm(vc, images, "e2e-web-01", DISK_SIZES, seed=11)
        if source == "vsphere":
            vma = stack.enter_context(
                vma_server(tmp / "vma", vcenter=vc, env=vsphere_source_env(images))
            )
        else:
            vma = stack.enter_context(vma_server(tmp / "vma", vcenter=vc, lab_dir=images))
        oma = stack.enter_context(
            oma_services(tmp / "oma", cloudstack=sim, poll_interval=0.2, extra_env=oma_env)
        )
        lab = E2eLab(tmp=tmp, vc=vc, sim=sim, vma=vma, oma=oma, vm=vm, link=link)
        stack.callback(_stop_vma_jobs, vma)  # first thing on the way out, also on failure
        yield lab
    # after every service stopped: no process of this test is left (qemu-nbd, migratekit, …)
    leftover = processes_of(tmp)
    assert not leftover, f"processes left after the test: {leftover}"


def _stop_vma_jobs(vma: Any) -> None:
    """Stop the VMA's active jobs and wait for them (≤30 s), so that no migratekit or source
    qemu-nbd outlives a failed test (labtest's teardown only asks for the stop)."""
    if not vma.process.alive():
        return

    def active() -> bool:
        status, body = vma.request("GET", "jobs")
        return status == 200 and any(j["status"] in ("queued", "running") for j in body["jobs"])

    if active():
        vma.stop_active_jobs()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not active(), timeout=30, interval=0.2, what="VMA jobs to stop")


def processes_of(tmp: Path) -> dict[int, str]:
    """Processes (pid → argv) whose command line or environment names a path under ``tmp``."""
    needle = str(tmp).encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes()
            if needle in argv or needle in (proc / "environ").read_bytes():
                found[int(proc.name)] = argv.replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[E2eLab]:
    """The whole lab at full speed."""
    with make_lab(tmp_path) as running:
        yield running


@pytest.fixture
def vsphere_lab(tmp_path: Path) -> Iterator[E2eLab]:
    """The whole lab, the VMA reading the VM through its vSphere source (VDDK stand-in)."""
    with make_lab(tmp_path, source="vsphere") as running:
        yield running


@pytest.fixture
def throttled_lab(tmp_path: Path) -> Iterator[E2eLab]:
    """The whole lab with a slow VMA → OMA link (crash tests act mid-copy).

    ``lab.link.rate`` may change at any time: None for full speed, e.g. before a setup sync.
    """
    with make_lab(tmp_path, slow_link=True) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Services get their settings from the fixtures only, never from the caller's shell."""
    for name in list(os.environ):
        if name.startswith(("OMA_", "VMA_", "MIGRATEKIT_")):
            monkeypatch.delenv(name, raising=False)
