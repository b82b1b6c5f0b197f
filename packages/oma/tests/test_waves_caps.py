"""Concurrency caps in admission: global, per VMA, per ESXi host, per datastore, per group,
and group priority — on SQLite, PostgreSQL and MariaDB.

Admission runs for real on the database; starting a job is stood in for by marking it
``provisioning`` (what the runner's workflow does first), so it counts as admitted.
"""

from __future__ import annotations

import pytest

from oma.database.models import (
    CloudStackTarget,
    JobStatus,
    MachineGroup,
    ReplicationJob,
    VmaAppliance,
    VmContext,
    VmDisk,
)
from oma.database.repos import groups, jobs
from oma.services.admission import Admission, Caps


def _vm(name: str, host: str, stores: list[str], vma: str = "vma-1") -> str:
    appliance = VmaAppliance.get_or_none(VmaAppliance.name == vma) or VmaAppliance.create(
        name=vma, url=f"http://{vma}.lab", token_encrypted="x"
    )
    if not CloudStackTarget.select().exists():
        CloudStackTarget.create(
            name="lab",
            endpoint="http://cs.lab/client/api",
            api_key="k",
            secret_key_encrypted="x",
            zone_id="z",
            oma_vm_id="oma-vm",
            is_default=True,
        )
    ctx = VmContext.create(
        vma=appliance.id,
        vcenter="vc.lab",
        vm_id=f"id-{name}",
        name=name,
        spec={
            "host": host,
            "disks": [
                {"key": str(2000 + i), "datastore": ds, "capacity_bytes": 1}
                for i, ds in enumerate(stores)
            ],
        },
    )
    for i in range(len(stores)):
        VmDisk.create(context=ctx.id, disk_key=str(2000 + i), capacity_bytes=1 << 20)
    return ctx.id


def _admit(caps: Caps) -> list[str]:
    """One admission pass; returns the names of the VMs whose jobs it started."""
    started: list[str] = []

    def create(job: ReplicationJob) -> None:
        ReplicationJob.update(status=JobStatus.PROVISIONING.value, wait_reason=None).where(
            ReplicationJob.id == job.id
        ).execute()
        started.append(VmContext.get_by_id(job.context_id).name)

    Admission(24, lambda _t: 0, caps=caps).admit(create)
    return started


def _waiting() -> dict[str, str]:
    return {
        VmContext.get_by_id(j.context_id).name: j.wait_reason
        for j in ReplicationJob.select().where(ReplicationJob.status == "pending")
    }


CASES = {
    "host": (
        Caps(per_host=2),
        [
            ("a", "esxi-1", ["ds-1"]),
            ("b", "esxi-1", ["ds-1"]),
            ("c", "esxi-1", ["ds-1"]),
            ("d", "esxi-2", ["ds-1"]),
        ],
        ["a", "b", "d"],
        {
            "c": "waiting: ESXi host esxi-1 (OMA_MAX_JOBS_PER_HOST) allows 2 concurrent jobs, "
            "2 running"
        },
    ),
    "datastore": (
        Caps(per_datastore=1),
        [("a", "h", ["ds-1", "ds-2"]), ("b", "h", ["ds-2"]), ("c", "h", ["ds-3"])],
        ["a", "c"],
        {
            "b": "waiting: datastore ds-2 (OMA_MAX_JOBS_PER_DATASTORE) allows 1 concurrent jobs, "
            "1 running"
        },
    ),
    "global": (
        Caps(total=2),
        [("a", "h1", ["ds-1"]), ("b", "h2", ["ds-2"]), ("c", "h3", ["ds-3"])],
        ["a", "b"],
        {"c": "waiting: OMA_MAX_JOBS allows 2 concurrent jobs, 2 running"},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_cap_holds_and_names_itself(any_db: str, case: str) -> None:
    caps, vms, started, waiting = CASES[case]
    ids = {name: _vm(name, host, stores) for name, host, stores in vms}
    for name, _, _ in vms:
        jobs.create_job(ids[name])
    assert _admit(caps) == started
    assert _waiting() == waiting
    assert _admit(caps) == []  # a second pass changes nothing
    # the first admitted job ends: the waiting one takes its place
    first = ReplicationJob.get(ReplicationJob.context == ids[started[0]])
    jobs.finish_job(first.id, JobStatus.COMPLETED, from_statuses=[JobStatus.PROVISIONING])
    assert _admit(caps) == list(waiting)
    assert _waiting() == {}


def test_per_vma_cap(any_db: str) -> None:
    for name in ("a", "b", "c"):
        jobs.create_job(_vm(name, "h", ["ds"]))
    jobs.create_job(_vm("d", "h", ["ds"], vma="vma-2"))
    assert _admit(Caps(per_vma=2)) == ["a", "b", "d"]
    assert _waiting() == {
        "c": "waiting: VMA vma-1 (OMA_MAX_JOBS_PER_VMA) allows 2 concurrent jobs, 2 running"
    }


def test_group_cap_and_priority_order_admission(any_db: str) -> None:
    low = MachineGroup.create(name="wave-low", priority=0, max_concurrent=0)
    high = MachineGroup.create(name="wave-high", priority=5, max_concurrent=2)
    olds = [_vm(f"old-{i}", "h", ["ds"]) for i in range(2)]
    news = [_vm(f"new-{i}", "h", ["ds"]) for i in range(3)]
    groups.add_members(low.id, olds)
    groups.add_members(high.id, news)
    for cid in olds + news:  # the low-priority group's jobs are older
        jobs.create_job(cid)
    assert _admit(Caps(total=3)) == ["new-0", "new-1", "old-0"]
    assert _waiting() == {
        "new-2": "waiting: group wave-high allows 2 concurrent jobs, 2 running",
        "old-1": "waiting: OMA_MAX_JOBS allows 3 concurrent jobs, 3 running",
    }
