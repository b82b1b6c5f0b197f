"""Twenty VMs through one OMA VM whose attach budget is 8, through every real process.

vcsim, the CloudStack simulator (whose KVM data-volume limit is set to the budget, so one
attach too many would fail a job), the real VMA with migratekit and qemu-nbd, the real
``oma serve`` and ``oma worker``. A sampler reads the OMA VM's volumes from the simulator the
whole time: never more than 8 are attached, every job completes, every replica equals its
source disk.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from labtest.cloudstack import cloudstack_sim
from labtest.labvm import lab_disk_sha256
from labtest.oma import add_lab_vms, oma_services, register_lab
from labtest.procs import wait_until
from labtest.vcsim import vcsim
from labtest.vma import vma_server
from oma.cloudstack import CloudStackClient

from .conftest import TERMINAL, MiB, create_vm, processes_of, sha256_file

pytestmark = pytest.mark.slow

VMS = 20
BUDGET = 8
DISK = 4 * MiB


class AttachSampler:
    """Counts the OMA VM's data volumes in the simulator every few milliseconds."""

    def __init__(self, cs: CloudStackClient, oma_vm_id: str) -> None:
        self.cs, self.oma_vm_id = cs, oma_vm_id
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            volumes = self.cs.list_volumes(vm_id=self.oma_vm_id)
            self.samples.append(sum(1 for v in volumes if v["type"] == "DATADISK"))
            self._stop.wait(0.02)

    def __enter__(self) -> AttachSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _ok(oma, method: str, path: str, body=None, expected: int = 200):
    status, data = oma.api(method, path, body)
    assert status == expected, (method, path, status, data)
    return data


def test_twenty_vms_through_an_oma_vm_with_budget_eight(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        vc = stack.enter_context(vcsim(tmp_path / "vc"))
        sim = stack.enter_context(
            cloudstack_sim(tmp_path / "cs", settings={"sim.kvm.max.data.volumes": BUDGET})
        )
        images = tmp_path / "images"
        vms = [create_vm(vc, images, f"wave-{i:02d}", [DISK], seed=100 + i) for i in range(VMS)]
        vma = stack.enter_context(vma_server(tmp_path / "vma", vcenter=vc, lab_dir=images))
        oma = stack.enter_context(
            oma_services(
                tmp_path / "oma",
                cloudstack=sim,
                poll_interval=0.2,
                extra_env={"OMA_ATTACH_BUDGET": str(BUDGET)},
            )
        )
        vma_id = register_lab(oma, vma=vma, sim=sim)
        contexts = add_lab_vms(oma, vma_id=vma_id, vc=vc, vm_ids=[vm["id"] for vm in vms])
        cs = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
        stack.callback(cs.close)

        with AttachSampler(cs, sim.oma_vm_id) as sampler:
            jobs = [
                _ok(oma, "POST", "replications", {"vm_context_id": c, "type": "full"}, 202)["id"]
                for c in contexts
            ]
            waited: set[str] = set()

            def all_done() -> bool:
                rows = _ok(oma, "GET", "replications?limit=100")["items"]
                mine = [r for r in rows if r["id"] in jobs]
                waited.update(r["id"] for r in mine if r.get("wait_reason"))
                return len(mine) == VMS and all(r["status"] in TERMINAL for r in mine)

            wait_until(all_done, timeout=600, interval=0.2, what="all 20 replications")
        results = [_ok(oma, "GET", f"replications/{j}") for j in jobs]
        assert [r["status"] for r in results] == ["completed"] * VMS, [
            (r["status"], r["error_message"]) for r in results if r["status"] != "completed"
        ]
        assert sampler.samples and max(sampler.samples) <= BUDGET, max(sampler.samples)
        assert max(sampler.samples) == BUDGET  # the budget was used, not just respected
        assert waited, "no job ever waited for room: the test did not exercise the budget"

        # every replica holds its source disk's bytes (read from the simulator's backing file)
        by_name = {v["name"]: v for v in cs.list_volumes()}
        for vm, ctx in zip(vms, contexts, strict=True):
            key = str(vm["disks"][0]["key"])
            backing = sim.state_dir / "volumes" / f"{by_name[f'oma-{ctx[:8]}-{key}']['id']}.img"
            assert sha256_file(backing, DISK) == lab_disk_sha256(vm["images"][key], size=DISK)
    leftover = processes_of(tmp_path)
    assert not leftover, f"processes left after the test: {leftover}"
