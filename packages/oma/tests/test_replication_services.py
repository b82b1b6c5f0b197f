"""Through the real processes: `oma serve` + `oma worker`, the CloudStack simulator, vcsim, the
real VMA API server replicating a lab VM with migratekit — and a kill -9 of the worker."""

from __future__ import annotations

import contextlib

import pytest

from labtest.cloudstack import cloudstack_sim
from labtest.labvm import create_lab_vm, lab_disk_sha256, write_lab_disk
from labtest.oma import oma_services, throwaway_database
from labtest.procs import wait_until
from labtest.vcsim import vcsim
from labtest.vma import vma_server
from oma.cloudstack import CloudStackClient
from oma.nbd import ExportManager

pytestmark = pytest.mark.slow
MiB = 1 << 20
SIZES = [48 * MiB, 16 * MiB]


def _ok(status_body: tuple[int, object], expected: int = 200) -> object:
    status, body = status_body
    assert status == expected, body
    return body


@pytest.fixture
def stack(request, tmp_path):
    """vcsim + CloudStack sim + lab VM + real VMA + real OMA (SQLite unless parametrised)."""
    kind = getattr(request, "param", "sqlite")
    with contextlib.ExitStack() as st:
        env = {}
        if kind != "sqlite":
            try:
                env["OMA_DATABASE_URL"] = st.enter_context(throwaway_database(kind))
            except Exception as exc:  # server absent: say so
                pytest.skip(f"{kind} not available on this machine: {exc}")
        vc = st.enter_context(vcsim(tmp_path / "vc"))
        sim = st.enter_context(cloudstack_sim(tmp_path / "cs"))
        vm = create_lab_vm(vc, tmp_path / "images", "web-1", SIZES, seed=3)
        vma = st.enter_context(
            vma_server(tmp_path / "vma", vcenter=vc, lab_dir=tmp_path / "images")
        )
        oma = st.enter_context(oma_services(tmp_path / "oma", cloudstack=sim, extra_env=env))
        yield vc, sim, vm, vma, oma


def _job(oma, job_id):
    return _ok(oma.api("GET", f"replications/{job_id}"))


def _wait_finished(oma, job_id):
    """The job once it has ended after a worker restart."""
    wait_until(
        lambda: _job(oma, job_id)["status"] in ("completed", "failed", "stopped"),
        timeout=120,
        interval=0.2,
        what="job to finish after the worker restart",
    )
    return _job(oma, job_id)


@pytest.mark.parametrize("stack", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_replication_survives_a_worker_kill(stack, tmp_path, register_lab_vm, sha256_head):
    vc, sim, vm, vma, oma = stack
    context_id = register_lab_vm(vc, sim, vm, vma, oma)
    job = _ok(oma.api("POST", "replications", {"vm_context_id": context_id, "type": "auto"}), 202)
    job_id = job["id"]
    # a second job on the same VM while one is active → 409
    status, body = oma.api("POST", "replications", {"vm_context_id": context_id})
    assert status == 409 and body["error"]["field"] == "vm_context_id"

    wait_until(
        lambda: _job(oma, job_id)["status"] in ("replicating", "completed", "failed"),
        timeout=60,
        what="job to reach the VMA",
    )
    oma.kill_worker()  # kill -9 mid-copy
    oma.restart_worker()
    done = _wait_finished(oma, job_id)
    assert done["status"] == "completed", done

    ctx = _ok(oma.api("GET", f"vm-contexts/{context_id}"))
    disks = {d["disk_key"]: d for d in ctx["disks"]}
    assert set(disks) == {str(d["key"]) for d in vm["disks"]}
    cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
    try:
        data_volumes = [v for v in cs.list_volumes() if v.get("type") != "ROOT"]
        assert len(data_volumes) == len(SIZES)  # no leaked volume
        assert {v["virtualmachineid"] for v in data_volumes} == {sim.oma_vm_id}
        by_name = {v["name"]: v for v in data_volumes}
    finally:
        cs.close()
    for d in vm["disks"]:
        key, size = str(d["key"]), int(d["capacity_bytes"])
        assert disks[key]["change_id"], disks[key]
        vol = by_name[f"oma-{context_id[:8]}-{key}"]
        backing = (sim.by_id_dir / f"virtio-{vol['id'].replace('-', '')[:20]}").resolve()
        assert sha256_head(backing, size) == lab_disk_sha256(vm["images"][key], size=size)
    running = ExportManager(state_dir=oma.data_dir / "exports").list_running()
    assert sorted(e.volume_id for e in running) == sorted(v["id"] for v in data_volumes)

    # an incremental sync moves only what changed, into the same volumes
    key = str(vm["disks"][0]["key"])
    write_lab_disk(tmp_path / "images", vm["id"], key, 5 * MiB, (0x7E, 256 * 1024))
    job2 = _ok(oma.api("POST", "replications", {"vm_context_id": context_id}), 202)["id"]
    wait_until(
        lambda: _job(oma, job2)["status"] in ("completed", "failed", "stopped"),
        timeout=120,
        interval=0.2,
        what="incremental job",
    )
    done2 = _job(oma, job2)
    assert done2["status"] == "completed", done2
    assert done2["sync_type"] == "incremental"
    assert 0 < done2["bytes_total"] <= 2 * MiB  # the changed extent, not the disks
    size = int(vm["disks"][0]["capacity_bytes"])
    vol = by_name[f"oma-{context_id[:8]}-{key}"]
    backing = (sim.by_id_dir / f"virtio-{vol['id'].replace('-', '')[:20]}").resolve()
    assert sha256_head(backing, size) == lab_disk_sha256(vm["images"][key], size=size)
    ctx2 = _ok(oma.api("GET", f"vm-contexts/{context_id}"))
    assert all(d["change_id"] != disks[d["disk_key"]]["change_id"] for d in ctx2["disks"])


def test_worker_killed_while_creating_volumes_resumes_without_leaks(stack, register_lab_vm):
    from labtest.cloudstack import clear_faults, inject_fault

    vc, sim, vm, vma, oma = stack
    context_id = register_lab_vm(vc, sim, vm, vma, oma)
    inject_fault(sim, "createVolume", None, once=False, delay=2.0)
    cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
    try:
        job_id = _ok(oma.api("POST", "replications", {"vm_context_id": context_id}), 202)["id"]
        wait_until(
            lambda: any(v.get("type") != "ROOT" for v in cs.list_volumes()),
            timeout=60,
            what="the first createVolume call",
        )
        oma.kill_worker()  # dies while CloudStack is still creating the volume
        clear_faults(sim)
        oma.restart_worker()
        done = _wait_finished(oma, job_id)
        assert done["status"] == "completed", done
        data_volumes = [v for v in cs.list_volumes() if v.get("type") != "ROOT"]
    finally:
        cs.close()
    # the volume created before the crash was adopted by name, not created twice
    assert sorted(v["name"] for v in data_volumes) == sorted(
        f"oma-{context_id[:8]}-{d['key']}" for d in vm["disks"]
    )
    assert {v["virtualmachineid"] for v in data_volumes} == {sim.oma_vm_id}
    running = ExportManager(state_dir=oma.data_dir / "exports").list_running()
    assert len(running) == len(SIZES)


def test_worker_heartbeat_reaches_health(tmp_path):
    with (
        cloudstack_sim(tmp_path / "cs") as sim,
        oma_services(tmp_path / "oma", cloudstack=sim) as oma,
    ):

        def alive() -> bool:
            status, body = oma.api("GET", "health", token=None)
            return status == 200 and body["worker"]["alive"]

        wait_until(alive, timeout=30, what="worker heartbeat")
        body = oma.api("GET", "health", token=None)[1]
        assert body["status"] == "ok" and body["worker"]["worker_id"] == "lab-worker"
        oma.worker_process.stop()  # SIGTERM: the scheduler shuts down cleanly
        assert oma.worker_process.proc.returncode == 0
        assert "worker stopped" in oma.worker_process.log_text()
