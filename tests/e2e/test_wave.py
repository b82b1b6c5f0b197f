"""A wave of twenty VMs of two disks each through every real process: two VMAs, one OMA.

The wave (``labtest.wave``) is replicated in full, concurrently under a per-VMA cap, with the
OMA's default attach budget of 24 and the simulator's KVM limit set to it (40 replica disks do
not fit at once: idle replicas are detached to make room); then every guest writes and the
wave replicates incrementally; then every VM is failed over live. Every replica equals its
source, every job completes, and the worker's memory does not grow with the work.

With two ``oma worker`` processes on PostgreSQL and on MariaDB, one is killed (SIGKILL) while
it holds leases mid-wave: the other takes its leases over and the wave completes once — one
VMA job per sync and VM, one replica volume per disk, one terminal event per job. That wave
has ten VMs: what it tests is the takeover (the attach budget is the first test's), and two
more waves of twenty cost the suite four minutes.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from labtest.oma import throwaway_database
from labtest.procs import wait_until
from labtest.wave import MiB, RssSampler, WaveLab, wave_lab

from .conftest import processes_of

pytestmark = pytest.mark.slow

VMS = 20
TAKEOVER_VMS = 10  # the two-worker waves
DISKS = [2 * MiB, 1 * MiB]
BUDGET = 24  # OMA_ATTACH_BUDGET's default
PER_VMA = 6  # OMA_MAX_JOBS_PER_VMA: at most 12 jobs admitted over the two VMAs (24 replicas)
LEASE_TIMEOUT = 10  # OMA_LEASE_TIMEOUT of the lab's workers (seconds)
POLLER_LEASE = 15  # the progress poller's job lease at the lab's poll interval (seconds)
WAVE_ENV = {"OMA_MAX_JOBS_PER_VMA": str(PER_VMA), "OMA_ATTACH_BUDGET": str(BUDGET)}
SIM_SETTINGS = {"sim.kvm.max.data.volumes": BUDGET}


@contextlib.contextmanager
def _wave(
    tmp: Path, *, workers: int = 1, database: str = "sqlite", vms: int = VMS
) -> Iterator[WaveLab]:
    env = dict(WAVE_ENV)
    with contextlib.ExitStack() as stack:
        if database != "sqlite":
            try:
                env["OMA_DATABASE_URL"] = stack.enter_context(throwaway_database(database))
            except Exception as exc:  # server absent: say so
                pytest.skip(f"{database} not reachable on this machine: {exc}")
        lab = stack.enter_context(
            wave_lab(
                tmp,
                vm_count=vms,
                disk_sizes=DISKS,
                workers=workers,
                oma_env=env,
                sim_settings=SIM_SETTINGS,
            )
        )
        yield lab
    leftover = processes_of(tmp)
    assert not leftover, f"processes left after the test: {leftover}"


def _assert_all_completed(jobs: list[dict], sync_type: str) -> None:
    bad = [(j["id"], j["status"], j["error_message"]) for j in jobs if j["status"] != "completed"]
    assert not bad, bad
    assert {j["sync_type"] for j in jobs} == {sync_type}


def _assert_failed_over(lab: WaveLab, records: list[dict]) -> None:
    bad = [(r["id"], r["status"], r.get("error")) for r in records if r["status"] != "completed"]
    assert not bad, bad
    states = {lab.ok("GET", f"vm-contexts/{c}")["state"] for c in lab.contexts}
    assert states == {"failed_over_live"}
    targets = {r["result"]["target_vm_id"] for r in records}
    assert len(targets) == len(lab.vms) and lab.sim.oma_vm_id not in targets


def _assert_once(lab: WaveLab, syncs_per_vm: int) -> None:
    """One VMA job per sync and VM, one volume per replica, one terminal event per job."""
    assert lab.vma_jobs_per_vm() == Counter({vm["id"]: syncs_per_vm for vm in lab.vms})
    names = lab.volumes_by_name()
    replicas = {n: c for n, c in names.items() if n.startswith("oma-")}
    assert len(replicas) == len(lab.vms) * len(DISKS) and set(replicas.values()) == {1}, replicas
    jobs = lab.db_rows("SELECT id, status FROM replication_jobs")
    assert len(jobs) == len(lab.vms) * syncs_per_vm and {s for _, s in jobs} == {"completed"}, jobs
    ends = Counter(
        job
        for job, kind in lab.db_rows("SELECT job_id, kind FROM job_events")
        if kind in ("completed", "failed", "stopped")
    )
    assert ends == Counter({job: 1 for job, _ in jobs}), ends


def test_wave_of_twenty_vms_through_two_vmas(tmp_path: Path) -> None:
    with _wave(tmp_path) as lab, RssSampler(lab.oma.worker_process.pid) as rss:
        full = lab.replicate_all("full")
        _assert_all_completed(full.jobs, "full")
        assert full.max_admitted <= 2 * PER_VMA, full.max_admitted
        assert lab.replica_mismatches() == []

        written = lab.write_guests(seed=1, length=64 * 1024)
        incremental = lab.replicate_all("incremental")
        _assert_all_completed(incremental.jobs, "incremental")
        assert incremental.bytes_done == written  # only the changes moved
        assert incremental.max_admitted <= 2 * PER_VMA, incremental.max_admitted
        # waits are seen by sampling the jobs list: over two waves of 20 a wait is always seen
        assert full.waited | incremental.waited, "no job waited for a cap: the wave missed it"
        assert lab.replica_mismatches() == []

        lab.write_guests(seed=2, length=64 * 1024)
        records, _ = lab.failover_all()
        _assert_failed_over(lab, records)
        assert lab.replica_mismatches() == []  # the final syncs carried the last writes
        _assert_once(lab, syncs_per_vm=3)
    first, last = rss.thirds()
    assert last <= first * 1.5, f"worker RSS grew from {first} KiB to {last} KiB"


@pytest.mark.parametrize("database", ["postgresql", "mariadb"])
def test_two_workers_share_the_wave_and_survive_a_kill(tmp_path: Path, database: str) -> None:
    with _wave(tmp_path, workers=2, database=database, vms=TAKEOVER_VMS) as lab:
        survivor, victim = lab.oma.worker_ids
        assert len(lab.oma.workers) == 2
        jobs = [
            lab.ok("POST", "replications", {"vm_context_id": c, "type": "full"}, 202)["id"]
            for c in lab.contexts
        ]

        def held_by(worker: str) -> set[str]:
            return {
                f"{table}:{row[0]}"
                for table in ("workflows", "replication_jobs")
                for row in lab.db_rows(
                    f"SELECT id FROM {table} WHERE claimed_by = '{worker}' "
                    "AND lease_until IS NOT NULL"
                )
            }

        def victim_leases() -> bool:
            wanted = held_by(victim)
            return any(k.startswith("workflows:") for k in wanted)

        wait_until(victim_leases, timeout=120, interval=0.05, what=f"{victim} to hold leases")
        lab.oma.workers[1].kill()  # kill -9 while it holds leases
        assert not lab.oma.workers[1].alive()
        killed_at = time.monotonic()
        # the dead worker's leases expire (workflows: OMA_LEASE_TIMEOUT; the poller's job leases:
        # 3 poll intervals, at least 15 s) and the survivor takes them over
        wait_until(
            lambda: not held_by(victim),
            timeout=LEASE_TIMEOUT + POLLER_LEASE + 30,
            interval=0.1,
            what=f"{survivor} to take over the leases of {victim}",
        )
        print(f"leases taken over {time.monotonic() - killed_at:.1f} s after the kill")
        result = lab.wait_jobs(jobs, timeout=300)
        _assert_all_completed(result.jobs, "full")
        assert lab.replica_mismatches() == []

        lab.write_guests(seed=3, length=64 * 1024)
        records, _ = lab.failover_all()
        _assert_failed_over(lab, records)
        assert lab.replica_mismatches() == []
        _assert_once(lab, syncs_per_vm=2)
        assert lab.oma.workers[0].alive()
