"""Live failover in-process against the real CloudStack simulator, real qemu-nbd exports and a
stub VMA (a real HTTP server) that copies real bytes with qemu-img and answers power calls."""

from __future__ import annotations

import dataclasses
import re
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from labtest.cloudstack import cloudstack_sim, inject_fault
from labtest.nbd import create_image, qemu_img, qemu_io
from labtest.oma import StubVma, _Handler, oma_database
from labtest.procs import wait_until
from migration_common import ConfigError
from oma.cloudstack import CloudStackClient
from oma.database.db import database
from oma.database.models import (
    JobEvent,
    NbdExport,
    ReplicationJob,
    ReplicaVolume,
    VmContext,
    VmDisk,
    Workflow,
    WorkflowStep,
)
from oma.database.repos import jobs as jobs_repo
from oma.errors import ConflictError, InvalidStateError
from oma.nbd import ExportManager
from oma.services.poller import ProgressPoller
from oma.services.runner import WorkflowRunner
from oma.workflows import kinds, records
from oma.workflows.engine import StepContext, WorkflowEngine
from oma.workflows.failover import store
from oma.workflows.failover.live import guest_conversion_mode
from oma.workflows.failover.target_vm import vm_name_for
from oma.workflows.replication import ReplicationWorkflow

pytestmark = pytest.mark.slow

MiB = 1 << 20
DISKS = {"2000": 8 * MiB, "2001": 4 * MiB}
VM_ID = "4205a841-0265-f4bd-39a6-39fd92196f53"
MAC = "00:50:56:aa:bb:01"


@dataclass
class PowerVma(StubVma):
    """The stub VMA plus ``GET /vms/{id}/power`` and ``POST /vms/{id}/power-off|power-on``."""

    power: dict[str, str] = field(default_factory=dict)
    power_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def start(self) -> PowerVma:
        stub = self

        class Handler(_Handler):
            vma = stub

            def _power(self, method: str) -> bool:
                path = urlsplit(self.path).path.removeprefix("/api/v1").strip("/")
                m = re.fullmatch(r"vms/([^/]+)/(power|power-off|power-on)", path)
                if m is None:
                    return False
                if not self._authorized():
                    return True
                vm_id, action = m.groups()
                body = self._body() if method == "POST" else {}
                method_used = None
                with stub._lock:
                    stub.power_calls.append((vm_id, action, body))
                    if action == "power-off":
                        was = stub.power.get(vm_id, "poweredOn")
                        stub.power[vm_id] = "poweredOff"
                        method_used = "already_off" if was == "poweredOff" else "graceful"
                    elif action == "power-on":
                        stub.power[vm_id] = "poweredOn"
                    state = stub.power.get(vm_id, "poweredOn")
                answer: dict[str, Any] = {"vm_id": vm_id, "power_state": state}
                if method_used:
                    answer.update(method=method_used, seconds=0.0)
                self._send(200, answer)
                return True

            def do_GET(self) -> None:
                if not self._power("GET"):
                    super().do_GET()

            def do_POST(self) -> None:
                if not self._power("POST"):
                    super().do_POST()

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self


@dataclass
class Lab:
    sim: Any
    vma: PowerVma
    cs: CloudStackClient
    exports: ExportManager
    runner: WorkflowRunner
    poller: ProgressPoller
    context_id: str
    sources: dict[str, Path]
    services: Any = None


def _raw(src: Path, tmp: Path) -> Path:
    out = tmp / f"{src.stem}.raw"
    qemu_img("convert", "-O", "raw", str(src), str(out))
    return out


@pytest.fixture
def lab(tmp_path, lab_context, lab_services):
    sources = {}
    for i, (key, size) in enumerate(DISKS.items()):
        img = create_image(tmp_path / f"src-{key}.qcow2", size)
        qemu_io(img, f"write -P {0x21 + i} 0 1M", f"write -P {0x71 + i} {size - MiB} 512k")
        sources[key] = img
    with (
        cloudstack_sim(tmp_path / "cs") as sim,
        PowerVma() as vma,
        oma_database(tmp_path / "oma.db"),
    ):
        vma.sources = {(VM_ID, k): p for k, p in sources.items()}
        vma.power[VM_ID] = "poweredOn"
        cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
        # the stub VMA has no certificate and writes with qemu-img in plaintext
        exports = ExportManager(
            port_range=(20200, 20299), state_dir=tmp_path / "exports", allow_plaintext=True
        )
        spec = {
            "cpus": 2,
            "memory_mb": 2048,
            "nics": [{"label": "Network adapter 1", "network": "VM Network", "mac": MAC}],
        }
        context_id = lab_context(sim, vma, VM_ID, "web_1.lab", DISKS, spec=spec)
        services = lab_services(sim, vma, cs, exports)
        poller = ProgressPoller(token_for=lambda _row: vma.token)
        try:
            yield Lab(
                sim, vma, cs, exports, _runner(services), poller, context_id, sources, services
            )
        finally:
            poller.close()
            for info in exports.list_running():
                exports.stop(info.pid, info.volume_id)
            cs.close()


def _runner(services: Any) -> WorkflowRunner:
    """One runner for every workflow kind, as ``oma worker`` builds it."""
    engine = WorkflowEngine("test-worker", lease_seconds=30)
    others = tuple(d for d in kinds.definitions(services) if d.kind != kinds.REPLICATION)
    return WorkflowRunner(engine, ReplicationWorkflow(services), services.vma_for, others=others)


def _replicate(lab: Lab) -> ReplicationJob:
    with database.connection_context():
        job_id = jobs_repo.create_job(lab.context_id).id
    lab.runner.tick()

    def finished() -> bool:
        lab.poller.tick()
        with database.connection_context():
            return ReplicationJob.get_by_id(job_id).status in ("completed", "failed", "stopped")

    wait_until(finished, timeout=60, interval=0.1, what=f"job {job_id}")
    with database.connection_context():
        return ReplicationJob.get_by_id(job_id)


def _params(lab: Lab, **over: Any) -> dict[str, Any]:
    params = {
        "type": "live",
        "network_mappings": {"VM Network": lab.sim.network_id},
        "service_offering_id": lab.sim.custom_service_offering_id,
        "template_id": lab.sim.template_id,
        "keep_macs": True,
        "graceful_timeout_s": 30,
        "force": True,
        "vm_name": None,
        "boot_disk_key": None,
    }
    params.update(over)
    return params


def _start(lab: Lab, **over: Any) -> str:
    with database.connection_context():
        wf, _ = store.start_failover(lab.context_id, _params(lab, **over))
    return wf.id


def _wf(wf_id: str) -> Workflow:
    with database.connection_context():
        return Workflow.get_by_id(wf_id)


def _steps(wf_id: str) -> dict[str, WorkflowStep]:
    with database.connection_context():
        return {s.name: s for s in records.steps_of(wf_id)}


def _drive(lab: Lab, wf_id: str, until: tuple[str, ...] = ("done", "failed")) -> Workflow:
    """Tick the workflow runner and the poller until the workflow settles."""

    def settled() -> bool:
        lab.runner.tick()
        lab.poller.tick()
        return _wf(wf_id).status in until

    wait_until(settled, timeout=90, interval=0.05, what=f"workflow {wf_id}")
    return _wf(wf_id)


def test_live_failover_boots_the_replicas_in_cloudstack(lab, tmp_path, sha256_head):
    assert _replicate(lab).status == "completed"
    qemu_io(lab.sources["2000"], "write -P 0x5A 3M 256k")  # changed after the last sync
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    assert wf.status == "done", wf.error
    steps = _steps(wf_id)
    assert [s.status for s in steps.values()] == ["done"] * len(store.FAILOVER_STEPS)
    assert steps["guest_conversion"].data["skipped"] is True
    # a snapshot of each replica right after the final sync, for a rollback
    snaps = steps["snapshot_replicas"].data["snapshots"]
    assert sorted(snaps) == sorted(DISKS)
    with database.connection_context():
        change_ids = {d.disk_key: d.change_id for d in VmDisk.select()}
    for key, entry in snaps.items():
        snap = lab.cs.get_snapshot(entry["snapshot_id"])
        assert snap["state"] == "BackedUp" and snap["volumeid"] == entry["volume_id"]
        assert entry["change_id"] == change_ids[key]
    result = wf.result
    assert result["downtime_seconds"] is not None and result["downtime_seconds"] >= 0
    assert result["final_sync_bytes"] > 0

    # the final sync was a normal incremental job that moved the change
    with database.connection_context():
        job = ReplicationJob.get_by_id(result["final_sync_job_id"])
        ctx = VmContext.get_by_id(lab.context_id)
        volumes = {v.disk_key: v for v in ReplicaVolume.select()}
        running = list(NbdExport.select().where(NbdExport.state == "running"))
        kinds = [e.kind for e in JobEvent.select().where(JobEvent.context == lab.context_id)]
    assert job.status == "completed" and job.effective_type == "incremental"
    assert result["final_sync_bytes"] == job.bytes_done
    assert ctx.state == "failed_over_live" and not ctx.ready_for_failover
    assert running == [] and lab.exports.list_running() == []
    assert list(lab.sim.by_id_dir.iterdir()) == []
    for kind in ("failover_requested", "source_powered_off", "final_sync_started"):
        assert kind in kinds
    assert "failed_over_live" in kinds

    # the source is off; the CloudStack VM runs on the replicas: boot disk as ROOT device 0
    assert lab.vma.power[VM_ID] == "poweredOff"
    assert lab.vma.power_calls[1][2]["timeout_s"] == 30
    vm = lab.cs.get_vm(result["target_vm_id"])
    assert vm["state"] == "Running" and vm["name"] == vm_name_for("web_1.lab") == "web-1-lab"
    assert vm["cpunumber"] == 2 and vm["memory"] == 2048
    assert [n["macaddress"] for n in vm["nic"]] == [MAC]
    attached = {v["id"]: v for v in lab.cs.list_volumes(vm_id=vm["id"])}
    boot = attached[volumes["2000"].cloudstack_volume_id]
    other = attached[volumes["2001"].cloudstack_volume_id]
    assert (boot["type"], boot["deviceid"]) == ("ROOT", 0)
    assert other["deviceid"] == 1
    assert len(attached) == 2  # the template's root volume is gone
    for key, size in DISKS.items():
        rv = volumes[key]
        assert rv.state == "attached_target" and rv.attached_vm_id == vm["id"]
        backing = lab.sim.state_dir / "volumes" / f"{rv.cloudstack_volume_id}.img"
        assert sha256_head(backing, size) == sha256_head(_raw(lab.sources[key], tmp_path), size)

    # a second failover of the same VM is refused
    with database.connection_context(), pytest.raises(InvalidStateError):
        store.start_failover(lab.context_id, _params(lab))


def test_deploy_failure_fails_with_cloudstacks_text_then_retry_completes(lab):
    assert _replicate(lab).status == "completed"
    inject_fault(lab.sim, "deployVirtualMachine", 530, errortext="Insufficient capacity in zone1")
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    assert wf.status == "failed"
    assert wf.error.startswith("deploy_target: ")
    assert "Insufficient capacity in zone1" in wf.error
    steps = _steps(wf_id)
    assert steps["deploy_target"].status == "failed"
    assert "Insufficient capacity in zone1" in steps["deploy_target"].error
    assert all(steps[n].status == "done" for n in store.FAILOVER_STEPS[:5])
    assert lab.cs.list_vms(name="web-1-lab") == []
    with database.connection_context():
        assert VmContext.get_by_id(lab.context_id).state == "ready_for_failover"
        # only one active workflow per VM; the failed one is resumed, not duplicated
        resumed, was_resumed = store.start_failover(lab.context_id, _params(lab))
    assert was_resumed and resumed.id == wf_id
    with database.connection_context(), pytest.raises(ConflictError):
        store.start_failover(lab.context_id, _params(lab))
    wf = _drive(lab, wf_id)
    assert wf.status == "done", wf.error
    steps = _steps(wf_id)
    assert steps["deploy_target"].attempts == 2 and steps["power_off_source"].attempts == 1
    assert steps["validate"].attempts == 2
    with database.connection_context():
        jobs = list(ReplicationJob.select())
    assert len(jobs) == 2  # the full sync and one final sync: the retry did not sync again
    assert lab.cs.get_vm(wf.result["target_vm_id"])["state"] == "Running"


def test_final_sync_waits_through_the_database_without_blocking(lab):
    assert _replicate(lab).status == "completed"
    lab.vma.gate = threading.Event()  # the VMA holds the final sync's copy
    wf_id = _start(lab)

    def final_sync_running() -> bool:
        lab.runner.tick()
        lab.poller.tick()
        step = _steps(wf_id)["final_sync"]
        return step.status == "running" and bool((step.data or {}).get("job_id"))

    wait_until(final_sync_running, timeout=30, interval=0.05, what="final sync to wait")
    counts = lab.runner.tick()  # returns at once: the step only re-checks the job row
    assert counts["waiting"] == 1
    step = _steps(wf_id)["final_sync"]
    assert step.attempts == 1 and "final sync job" in step.data["_waiting"]
    assert _wf(wf_id).lease_until is None  # any worker may pick it up on its next tick
    lab.vma.gate.set()
    wf = _drive(lab, wf_id)
    assert wf.status == "done", wf.error
    assert _steps(wf_id)["final_sync"].attempts == 1


def test_failed_final_sync_fails_the_failover_and_rollback_restores_the_source(lab):
    assert _replicate(lab).status == "completed"
    del lab.vma.sources[(VM_ID, "2001")]  # the VMA reports the final sync as failed
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    assert wf.status == "failed" and wf.error.startswith("final_sync: ")
    assert "no source image" in wf.error
    assert lab.vma.power[VM_ID] == "poweredOff"

    with database.connection_context():
        rb, resumed = store.start_rollback(wf_id)
    assert not resumed
    rb = _drive(lab, rb.id)
    assert rb.status == "done", rb.error
    assert _wf(wf_id).status == "rolled_back"
    assert lab.vma.power[VM_ID] == "poweredOn"
    with database.connection_context():
        ctx = VmContext.get_by_id(lab.context_id)
        running = list(NbdExport.select().where(NbdExport.state == "running"))
        disks = list(VmDisk.select())
    assert ctx.state == "ready_for_failover" and ctx.ready_for_failover
    assert len(running) == 2 and len(lab.exports.list_running()) == 2
    assert all(d.change_id for d in disks)  # the replicas were never used: keep syncing


def test_rollback_after_a_failed_deploy_keeps_replicas_for_the_next_sync(
    lab, tmp_path, sha256_head
):
    assert _replicate(lab).status == "completed"
    inject_fault(lab.sim, "attachVolume", 530, errortext="Failed to attach volume: host down")
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    assert wf.status == "failed" and "host down" in wf.error
    vm_id = _steps(wf_id)["deploy_target"].data["vm_id"]
    assert lab.cs.get_vm(vm_id)["state"] == "Stopped"

    with database.connection_context():
        rb, _ = store.start_rollback(wf_id)
    rb = _drive(lab, rb.id)
    assert rb.status == "done", rb.error
    assert lab.cs.get_vm(vm_id) is None
    with database.connection_context():
        volumes = {v.disk_key: v for v in ReplicaVolume.select()}
        running = NbdExport.select().where(NbdExport.state == "running").count()
    # the replicas wait detached (no export): the next sync attaches them on demand
    for key in DISKS:
        assert lab.cs.get_volume(volumes[key].cloudstack_volume_id).get("virtualmachineid") is None
        assert volumes[key].state == "detached" and volumes[key].device_path is None
    assert running == 0 and lab.exports.list_running() == []
    # the VM syncs again from where it was, and the replicas equal the sources
    job = _replicate(lab)
    assert job.status == "completed" and job.effective_type == "incremental"
    with database.connection_context():
        volumes = {v.disk_key: v for v in ReplicaVolume.select()}
    for key, size in DISKS.items():
        assert lab.cs.get_volume(volumes[key].cloudstack_volume_id)["virtualmachineid"] == (
            lab.sim.oma_vm_id
        )
        assert volumes[key].state == "attached"
        assert sha256_head(Path(volumes[key].device_path), size) == sha256_head(
            _raw(lab.sources[key], tmp_path), size
        )


def test_validation_names_what_is_wrong(lab):
    assert _replicate(lab).status == "completed"
    wf_id = _start(lab, network_mappings={"Other Net": lab.sim.network_id})
    wf = _drive(lab, wf_id)
    assert wf.status == "failed"
    assert "source network 'VM Network'" in wf.error
    assert lab.vma.power_calls == []  # nothing was touched
    with database.connection_context():
        wf2, resumed = store.start_failover(
            lab.context_id, _params(lab, service_offering_id="no-such-offering")
        )
    assert resumed and wf2.id == wf_id
    wf = _drive(lab, wf_id)
    assert "service offering no-such-offering does not exist" in wf.error
    # no template named and the spec names no guest OS: never "the zone's first template"
    with database.connection_context():
        store.start_failover(lab.context_id, _params(lab, template_id=None))
    wf = _drive(lab, wf_id)
    assert "maps to no CloudStack OS type; name a template_id" in wf.error
    assert f"rhel8-migrated ({lab.sim.template_id}, Red Hat Enterprise Linux 8)" in wf.error
    with database.connection_context():
        store.start_failover(lab.context_id, _params(lab, boot_disk_key="9999"))
    wf = _drive(lab, wf_id)
    assert "boot_disk_key 9999 is not a disk of this VM (2000, 2001)" in wf.error
    assert lab.vma.power_calls == []


def test_rollback_of_a_completed_failover(lab, tmp_path):
    assert _replicate(lab).status == "completed"
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    assert wf.status == "done", wf.error
    vm_id = wf.result["target_vm_id"]
    with database.connection_context():
        rb, _ = store.start_rollback(wf_id)
    rb = _drive(lab, rb.id)
    assert rb.status == "done", rb.error
    assert lab.cs.get_vm(vm_id) is None
    assert lab.vma.power[VM_ID] == "poweredOn"
    with database.connection_context():
        ctx = VmContext.get_by_id(lab.context_id)
        volumes = {v.disk_key: v for v in ReplicaVolume.select()}
        disks = list(VmDisk.select())
    # the target VM ran on the replicas: reverted to their snapshots, the chain is kept
    assert ctx.state == "ready_for_failover" and ctx.ready_for_failover
    assert all(d.change_id for d in disks) and rb.result["chain_kept"] is True
    for key in DISKS:  # kept, detached: the next sync attaches them on demand
        assert volumes[key].state == "detached"
        assert lab.cs.get_volume(volumes[key].cloudstack_volume_id).get("virtualmachineid") is None
    job = _replicate(lab)
    assert job.status == "completed" and job.effective_type == "incremental"


def test_a_vm_deployed_before_a_crash_is_adopted_not_duplicated(lab, monkeypatch):
    assert _replicate(lab).status == "completed"
    real_record = StepContext.record

    def dies_before_recording_the_vm(self, **values):
        if "vm_id" in values:
            raise RuntimeError("worker killed")
        return real_record(self, **values)

    monkeypatch.setattr(StepContext, "record", dies_before_recording_the_vm)
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    assert wf.status == "failed" and "worker killed" in wf.error
    assert len(lab.cs.list_vms(name="web-1-lab")) == 1
    monkeypatch.setattr(StepContext, "record", real_record)
    # what a kill -9 at that moment leaves: the step running without the VM's id, the
    # workflow running under a lease nobody renews
    with database.connection_context():
        WorkflowStep.update(status="running", error=None).where(
            WorkflowStep.workflow == wf_id, WorkflowStep.name == "deploy_target"
        ).execute()
        Workflow.update(status="running", error=None, claimed_by="dead-worker").where(
            Workflow.id == wf_id
        ).execute()
    wf = _drive(lab, wf_id)
    assert wf.status == "done", wf.error
    assert _steps(wf_id)["deploy_target"].attempts == 2
    vms = lab.cs.list_vms(name="web-1-lab")
    assert [v["id"] for v in vms] == [wf.result["target_vm_id"]]
    assert vms[0]["state"] == "Running"


@pytest.mark.parametrize("tool", ["succeeds", "fails", "missing"])
def test_guest_conversion_runs_when_configured(lab, monkeypatch, tmp_path, tool):
    import os

    assert _replicate(lab).status == "completed"
    bin_dir, calls = tmp_path / "bin", tmp_path / "v2v-calls"
    bin_dir.mkdir()
    if tool != "missing":
        # a stand-in that records its arguments and whether the disk is there
        script = bin_dir / "virt-v2v-in-place"
        script.write_text(
            "#!/bin/sh\n"
            'for arg in "$@"; do echo "$arg"; done > "$V2V_CALLS"\n'
            '[ -e "$3" ] && echo present >> "$V2V_CALLS"\n'
            '[ -z "$V2V_FAIL" ] && exit 0\n'
            'echo "virt-v2v-in-place: warning: opening the disk" >&2\n'
            'echo "virt-v2v-in-place: error: $V2V_FAIL" >&2\n'
            "exit 1\n"
        )
        script.chmod(0o755)
    path = [d for d in os.environ["PATH"].split(os.pathsep) if d]
    if tool == "missing":  # as on a host without the virt-v2v package
        path = [d for d in path if not (Path(d) / "virt-v2v-in-place").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), *path]))
    monkeypatch.setenv("V2V_CALLS", str(calls))
    if tool == "fails":
        monkeypatch.setenv("V2V_FAIL", "inspection could not detect the source guest")
    lab.runner = _runner(dataclasses.replace(lab.services, guest_conversion="virt-v2v"))
    with database.connection_context():  # the replicas' devices on the OMA after the sync
        devices = {v.disk_key: v.device_path for v in ReplicaVolume.select()}
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    steps = _steps(wf_id)
    boot = devices[steps["validate"].data["boot_disk_key"]]
    assert boot is not None
    if tool == "succeeds":
        assert wf.status == "done", wf.error
        # run on the boot replica, attached to the OMA for it after the snapshots were taken
        assert steps["guest_conversion"].data == {"skipped": False, "device": boot}
        assert calls.read_text().splitlines() == ["-i", "disk", boot, "present"]
        assert steps["snapshot_replicas"].finished_at <= steps["guest_conversion"].started_at
        return
    assert wf.status == "failed"
    assert steps["guest_conversion"].status == "failed"
    assert steps["snapshot_replicas"].status == "done"
    with database.connection_context():  # attached for the conversion only: detached again
        for rv in ReplicaVolume.select():
            assert rv.state == "detached"
            assert lab.cs.get_volume(rv.cloudstack_volume_id).get("virtualmachineid") is None
    if tool == "fails":
        assert wf.error == (
            "guest_conversion: virt-v2v-in-place failed with exit code 1: "
            "virt-v2v-in-place: warning: opening the disk | "
            "virt-v2v-in-place: error: inspection could not detect the source guest"
        )
        assert calls.read_text().splitlines() == ["-i", "disk", boot, "present"]
    else:
        assert wf.error.startswith("guest_conversion: virt-v2v-in-place is not installed")
        assert not calls.exists()


def test_guest_conversion_setting_is_validated():
    bad = type("Cfg", (), {"guest_conversion": "qemu"})()
    with pytest.raises(ConfigError) as err:
        guest_conversion_mode(bad)
    assert err.value.variable == "OMA_GUEST_CONVERSION"
    assert guest_conversion_mode(type("Cfg", (), {"guest_conversion": "virt-v2v"})()) == "virt-v2v"


def test_guest_conversion_comes_from_the_loaded_config_only(tmp_path, monkeypatch):
    import oma.config
    from oma.config import load_config

    toml = tmp_path / "oma.toml"
    toml.write_text('guest_conversion = "virt-v2v"\n')
    cfg = load_config(environ={"OMA_DATA_DIR": str(tmp_path), "OMA_CONFIG": str(toml)})
    assert guest_conversion_mode(cfg) == "virt-v2v"
    cfg = load_config(environ={"OMA_DATA_DIR": str(tmp_path), "OMA_GUEST_CONVERSION": "skip"})
    # the process environment is config.py's business alone: set late, it changes nothing
    monkeypatch.setenv("OMA_GUEST_CONVERSION", "virt-v2v")
    assert guest_conversion_mode(cfg) == "skip"
    assert guest_conversion_mode(type("Cfg", (), {})()) == "skip"
    assert not hasattr(oma.config, "environ_flag")


def test_retry_after_a_failed_final_sync_runs_a_new_one(lab):
    assert _replicate(lab).status == "completed"
    source = lab.vma.sources.pop((VM_ID, "2001"))  # the VMA fails the final sync
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    assert wf.status == "failed" and wf.error.startswith("final_sync: ")
    failed_job = _steps(wf_id)["final_sync"].data["failed_jobs"][0]
    lab.vma.sources[(VM_ID, "2001")] = source
    with database.connection_context():
        store.retry_failover(wf_id)
    wf = _drive(lab, wf_id)
    assert wf.status == "done", wf.error
    assert wf.result["final_sync_job_id"] != failed_job
    steps = _steps(wf_id)
    assert steps["power_off_source"].attempts == 1  # the source was powered off once
    assert steps["final_sync"].attempts == 2
    with database.connection_context():
        assert VmContext.get_by_id(lab.context_id).state == "failed_over_live"


def test_a_destroyed_vm_holding_the_name_is_never_adopted_or_clashed_with(lab):
    """A Destroyed (not expunged) VM keeps its host name in CloudStack: the failover neither
    adopts it nor deploys into the clash; a derived name moves on, a requested one is refused."""
    assert _replicate(lab).status == "completed"
    name = vm_name_for("web_1.lab")
    old = lab.cs.deploy_vm(
        name=name,
        zone_id=lab.sim.zone_id,
        service_offering_id=lab.sim.service_offering_id,
        template_id=lab.sim.template_id,
        network_ids=[lab.sim.network_id],
    )
    lab.cs.destroy_vm(old["id"], expunge=False)
    assert lab.cs.get_vm(old["id"])["state"] == "Destroyed"

    refused = _drive(lab, _start(lab, vm_name=name))
    assert refused.status == "failed" and f"the name {name} is still held" in refused.error
    with database.connection_context():
        wf, resumed = store.start_failover(lab.context_id, _params(lab))
    assert resumed
    wf = _drive(lab, wf.id)
    assert wf.status == "done", wf.error
    assert wf.result["target_vm_name"] == f"{name}-2"
    assert wf.result["target_vm_id"] != old["id"]
    assert lab.cs.get_vm(old["id"])["state"] == "Destroyed"  # untouched


# -- rollback that keeps the incremental chain ---------------------------------------------------


def _backing(lab: Lab, volume_id: str) -> Path:
    return lab.sim.state_dir / "volumes" / f"{volume_id}.img"


def _target_runs_and_writes(lab: Lab, vm_id: str) -> None:
    """What a guest booted in CloudStack does to its disks: write into every replica volume
    attached to the target VM (the simulator's backing files)."""
    attached = lab.cs.list_volumes(vm_id=vm_id)
    with database.connection_context():
        ours = {rv.cloudstack_volume_id for rv in ReplicaVolume.select()}
    assert ours <= {v["id"] for v in attached}
    for vol_id in ours:
        with open(_backing(lab, vol_id), "r+b") as f:
            for offset in (0, 2 * MiB + 4096):
                f.seek(offset)
                f.write(b"\xee" * 65536)


def _rollback(lab: Lab, wf_id: str) -> Workflow:
    with database.connection_context():
        rb, _ = store.start_rollback(wf_id)
    rb = _drive(lab, rb.id)
    assert rb.status == "done", rb.error
    return rb


def _events(lab: Lab, kind: str) -> list[JobEvent]:
    with database.connection_context():
        return list(
            JobEvent.select().where(JobEvent.context == lab.context_id, JobEvent.kind == kind)
        )


def _assert_replicas_equal_sources(lab: Lab, tmp_path: Path, sha256_head: Any) -> None:
    with database.connection_context():
        volumes = {v.disk_key: v for v in ReplicaVolume.select()}
    for key, size in DISKS.items():
        backing = _backing(lab, volumes[key].cloudstack_volume_id)
        assert sha256_head(backing, size) == sha256_head(_raw(lab.sources[key], tmp_path), size)


def test_rollback_reverts_the_target_writes_and_keeps_the_incremental_chain(
    lab, tmp_path, sha256_head
):
    assert _replicate(lab).status == "completed"
    wf = _drive(lab, _start(lab))
    assert wf.status == "done", wf.error
    snaps = _steps(wf.id)["snapshot_replicas"].data["snapshots"]
    with database.connection_context():
        change_ids = {d.disk_key: d.change_id for d in VmDisk.select()}
    _target_runs_and_writes(lab, wf.result["target_vm_id"])

    rb = _rollback(lab, wf.id)
    assert rb.result["chain_kept"] is True and rb.result["full_sync"] == {}
    assert rb.result["reverted"] == {k: v["snapshot_id"] for k, v in snaps.items()}
    assert sorted(rb.result["snapshots_deleted"]) == sorted(
        v["snapshot_id"] for v in snaps.values()
    )
    # the replicas are the final sync's copy again, the change IDs describe them
    _assert_replicas_equal_sources(lab, tmp_path, sha256_head)
    with database.connection_context():
        ctx = VmContext.get_by_id(lab.context_id)
        assert {d.disk_key: d.change_id for d in VmDisk.select()} == change_ids
        volumes = list(ReplicaVolume.select())
    assert ctx.state == "ready_for_failover" and ctx.ready_for_failover
    assert {v.state for v in volumes} == {"detached"}  # the next sync attaches them
    assert lab.cs.list_snapshots() == []  # nothing left behind in CloudStack
    assert "reverted to their snapshots" in _events(lab, "failover_rolled_back")[0].message
    assert len(_events(lab, "replicas_reverted")) == 1 and not _events(lab, "rollback_full_sync")

    qemu_io(lab.sources["2001"], "write -P 0x33 1M 64k")  # the guest runs again
    job = _replicate(lab)
    assert job.status == "completed" and job.effective_type == "incremental"
    sent = lab.vma.replicate_calls[-1]["disks"]
    assert {d["disk_key"]: d["previous_change_id"] for d in sent} == change_ids
    _assert_replicas_equal_sources(lab, tmp_path, sha256_head)


@pytest.mark.parametrize("how", ["snapshot_deleted", "revert_refused", "snapshot_refused"])
def test_a_rollback_that_cannot_revert_a_replica_falls_back_to_full_for_it(
    lab, tmp_path, sha256_head, how
):
    assert _replicate(lab).status == "completed"
    if how == "snapshot_refused":  # once: the first snapshot (disk 2000) is refused
        inject_fault(lab.sim, "createSnapshot", 530, errortext="Snapshots are disabled here")
    wf = _drive(lab, _start(lab))
    assert wf.status == "done", wf.error  # a refused snapshot does not stop the failover
    snaps = _steps(wf.id)["snapshot_replicas"].data["snapshots"]
    with database.connection_context():
        change_ids = {d.disk_key: d.change_id for d in VmDisk.select()}
    _target_runs_and_writes(lab, wf.result["target_vm_id"])
    if how == "snapshot_deleted":  # behind the OMA's back
        lost = snaps["2001"]["snapshot_id"]
        lab.cs.delete_snapshot(lost)
        why = f"snapshot {lost} no longer exists in CloudStack"
    elif how == "snapshot_refused":
        assert _steps(wf.id)["snapshot_replicas"].data["refused"] == {
            "2000": "Snapshots are disabled here"
        }
        [event] = _events(lab, "snapshot_refused")
        assert "a rollback would sync that disk in full" in event.message
        why = "CloudStack refused the failover's snapshot of the replica: "
        why += "Snapshots are disabled here"
    else:
        # once: the first revert (disk 2000, in disk-key order) is refused
        inject_fault(lab.sim, "revertSnapshot", 530, errortext="Revert is not supported here")
        why = f"reverting to snapshot {snaps['2000']['snapshot_id']} failed: "
        why += "Revert is not supported here"

    rb = _rollback(lab, wf.id)
    lost_key = "2001" if how == "snapshot_deleted" else "2000"
    kept_key = "2000" if lost_key == "2001" else "2001"
    assert rb.result["chain_kept"] is False
    assert rb.result["full_sync"] == {lost_key: why}
    assert rb.result["reverted"] == {kept_key: snaps[kept_key]["snapshot_id"]}
    with database.connection_context():
        after = {d.disk_key: d.change_id for d in VmDisk.select()}
        ctx = VmContext.get_by_id(lab.context_id)
    assert after == {kept_key: change_ids[kept_key], lost_key: None}  # never a stale one
    assert ctx.state == "discovered" and not ctx.ready_for_failover
    [event] = _events(lab, "rollback_full_sync")
    assert event.message == (
        f"disk {lost_key}: the target VM ran on the replica and cannot be reverted ({why}); "
        "its next sync is full"
    )
    [done] = _events(lab, "failover_rolled_back")
    assert f"next sync full for disk {lost_key} ({why})" in done.message
    assert _wf(wf.id).status == "rolled_back"
    assert lab.cs.list_snapshots() == []

    job = _replicate(lab)
    assert job.status == "completed"
    sent = {
        d["disk_key"]: d.get("previous_change_id") for d in lab.vma.replicate_calls[-1]["disks"]
    }
    assert sent == {kept_key: change_ids[kept_key], lost_key: None}
    _assert_replicas_equal_sources(lab, tmp_path, sha256_head)


def _converting_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in virt-v2v-in-place on PATH that changes the disk it converts (its first
    64 KiB), then fails when ``V2V_FAIL`` is set."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "virt-v2v-in-place"
    script.write_text(
        "#!/bin/sh\n"
        'head -c 65536 /dev/zero | tr "\\000" "\\252" | dd of="$3" conv=notrunc 2>/dev/null\n'
        '[ -z "$V2V_FAIL" ] && exit 0\n'
        'echo "virt-v2v-in-place: error: $V2V_FAIL" >&2\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), os.environ["PATH"]]))


def test_guest_conversion_is_undone_by_the_rollback(lab, monkeypatch, tmp_path, sha256_head):
    """The snapshot is taken before guest conversion changes the boot replica: a rollback of
    a failover that failed in (or after) the conversion reverts the boot replica."""
    _converting_tool(tmp_path, monkeypatch)
    monkeypatch.setenv("V2V_FAIL", "inspection could not detect the source guest")
    lab.runner = _runner(dataclasses.replace(lab.services, guest_conversion="virt-v2v"))
    assert _replicate(lab).status == "completed"
    with database.connection_context():
        boot_volume = ReplicaVolume.get(ReplicaVolume.disk_key == "2000").cloudstack_volume_id
    wf = _drive(lab, _start(lab))
    assert wf.status == "failed" and wf.error.startswith("guest_conversion: ")
    assert _steps(wf.id)["snapshot_replicas"].status == "done"
    with database.connection_context():  # the final sync's
        change_ids = {d.disk_key: d.change_id for d in VmDisk.select()}
    changed = _backing(lab, boot_volume).read_bytes()[:65536]
    assert changed == b"\xaa" * 65536  # the conversion wrote to the boot replica

    rb = _rollback(lab, wf.id)
    assert rb.result["chain_kept"] is True and list(rb.result["reverted"]) == ["2000"]
    _assert_replicas_equal_sources(lab, tmp_path, sha256_head)
    with database.connection_context():
        assert {d.disk_key: d.change_id for d in VmDisk.select()} == change_ids
        volumes = {v.disk_key: v for v in ReplicaVolume.select()}
    # detached for the snapshots before the conversion; the next sync attaches them on demand
    assert volumes["2000"].state == "detached" and volumes["2001"].state == "detached"
    assert lab.cs.list_snapshots() == []


def test_a_snapshot_taken_after_guest_conversion_never_keeps_the_boot_change_id(
    lab, monkeypatch, tmp_path, sha256_head
):
    """A failover created before the snapshot step existed takes its snapshots when it
    resumes — after the conversion changed the boot replica: that disk falls back to full."""
    from oma.workflows.failover import live

    _converting_tool(tmp_path, monkeypatch)
    monkeypatch.setenv("V2V_FAIL", "no root device found")
    services = dataclasses.replace(lab.services, guest_conversion="virt-v2v")
    assert _replicate(lab).status == "completed"
    with monkeypatch.context() as old_oma:  # an OMA whose failover had no snapshot step
        old_steps = [n for n in store.FAILOVER_STEPS if n != "snapshot_replicas"]
        old_oma.setattr(store, "FAILOVER_STEPS", old_steps)
        old_oma.setattr(live, "FAILOVER_STEPS", old_steps)
        lab.runner = _runner(services)
        wf_id = _start(lab)
        wf = _drive(lab, wf_id)
    assert wf.status == "failed" and wf.error.startswith("guest_conversion: ")
    assert "snapshot_replicas" not in _steps(wf_id)
    with database.connection_context():  # the final sync's
        change_ids = {d.disk_key: d.change_id for d in VmDisk.select()}
    # upgraded: the failover resumes with the step added (run before the conversion's retry)
    lab.runner = _runner(services)
    monkeypatch.delenv("V2V_FAIL")
    with database.connection_context():
        store.retry_failover(wf_id)
    wf = _drive(lab, wf_id)
    assert wf.status == "done", wf.error
    taken = _steps(wf_id)["snapshot_replicas"].data
    assert taken["after_guest_conversion"] is True and taken["after_target_start"] is False

    rb = _rollback(lab, wf_id)
    snap = taken["snapshots"]["2000"]["snapshot_id"]
    assert rb.result["full_sync"] == {
        "2000": f"snapshot {snap} was taken after guest conversion changed the boot replica"
    }
    assert list(rb.result["reverted"]) == ["2001"]
    with database.connection_context():
        after = {d.disk_key: d.change_id for d in VmDisk.select()}
    assert after == {"2000": None, "2001": change_ids["2001"]}
    job = _replicate(lab)  # the boot disk is copied in full again
    assert job.status == "completed"
    _assert_replicas_equal_sources(lab, tmp_path, sha256_head)


def test_a_cleanup_deletes_the_snapshots_a_failover_left(lab):
    from oma.workflows.cleanup import request_cleanup

    assert _replicate(lab).status == "completed"
    inject_fault(lab.sim, "deployVirtualMachine", 530, errortext="Insufficient capacity")
    wf = _drive(lab, _start(lab))
    assert wf.status == "failed" and "Insufficient capacity" in wf.error
    snaps = _steps(wf.id)["snapshot_replicas"].data["snapshots"]
    assert len(lab.cs.list_snapshots()) == len(DISKS)
    with database.connection_context():  # given up on: the replicas go, their snapshots too
        cleanup = request_cleanup(lab.context_id)
    cleanup = _drive(lab, cleanup.id)
    assert cleanup.status == "done", cleanup.error
    assert lab.cs.list_snapshots() == []
    assert all(lab.cs.get_volume(v["volume_id"]) is None for v in snaps.values())
    deleted = _steps(cleanup.id)["volumes"].data["snapshots_deleted"]
    assert sorted(deleted) == sorted(v["snapshot_id"] for v in snaps.values())
    marked = _steps(wf.id)["snapshot_replicas"].data["snapshots"]
    assert all(entry["deleted"] for entry in marked.values())


def test_a_snapshot_taken_before_a_crash_is_adopted_not_taken_twice(lab, monkeypatch):
    assert _replicate(lab).status == "completed"
    real_record = StepContext.record

    def dies_before_recording_the_snapshot(self, **values):
        if "snapshots" in values:
            raise RuntimeError("worker killed")
        return real_record(self, **values)

    monkeypatch.setattr(StepContext, "record", dies_before_recording_the_snapshot)
    wf_id = _start(lab)
    wf = _drive(lab, wf_id)
    assert wf.status == "failed" and "worker killed" in wf.error
    [taken] = lab.cs.list_snapshots()  # CloudStack holds it, the OMA has not recorded it
    monkeypatch.setattr(StepContext, "record", real_record)
    with database.connection_context():
        store.retry_failover(wf_id)
    wf = _drive(lab, wf_id)
    assert wf.status == "done", wf.error
    snaps = _steps(wf_id)["snapshot_replicas"].data["snapshots"]
    assert snaps["2000"]["snapshot_id"] == taken["id"]
    assert sorted(s["id"] for s in lab.cs.list_snapshots()) == sorted(
        v["snapshot_id"] for v in snaps.values()
    )
