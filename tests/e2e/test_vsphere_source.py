"""The lab migration through the VMA's production source: nbdkit with the VDDK stand-in on the
job's vCenter snapshot, incrementals from vcsim's QueryChangedDiskAreas (the areas the lab
guest wrote). Full sync, guest writes, an incremental moving exactly the written bytes, a CBT
reset that falls back to a full copy, live failover; every replica byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labtest.labvm import reset_lab_cbt

pytestmark = pytest.mark.slow
MiB = 1 << 20


def _extents_files(lab, job_id: str) -> dict[str, list[dict]]:
    """The changed areas the VMA planned per disk (from CBT) for one job."""
    plan = json.loads((lab.vma.data_dir / "jobs" / job_id / "plan.json").read_text())
    out = {}
    for disk in plan["disks"]:
        path = disk["changed_extents_file"]
        out[disk["disk_key"]] = json.loads(Path(path).read_text()) if path else None
    return out


def _nbdkit_logs(lab, job_id: str) -> list[str]:
    """The log files of the job's nbdkit processes (one per disk)."""
    return sorted(p.name for p in (lab.vma.data_dir / "jobs" / job_id).glob("nbdkit-*.log"))


def test_vsphere_source_full_incremental_cbt_reset_and_live_failover(vsphere_lab) -> None:
    lab = vsphere_lab
    keys = [str(d["key"]) for d in lab.vm["disks"]]
    lab.register()

    full_id = lab.replicate("auto")
    full = lab.wait_job(full_id)
    assert full["status"] == "completed", full
    assert full["sync_type"] == "full"
    assert _nbdkit_logs(lab, full_id) == sorted(f"nbdkit-{k}.log" for k in keys)
    lab.assert_replicas_equal()
    ctx = lab.context()
    first_ids = {d["disk_key"]: d["change_id"] for d in ctx["disks"]}
    # vSphere change IDs from the snapshot: "52 xx … xx/<n>"
    assert all(c and c.startswith("52 ") and "/" in c for c in first_ids.values()), first_ids
    exports = lab.oma_export_pids()
    lab.settled(exports)  # no source server (qemu-nbd) and no snapshot left

    # the guest writes 1 MiB into disk 0 and 512 KiB + 4 KiB into disk 1
    lab.write(0, 7 * MiB, MiB, seed=1)
    lab.write(1, 3 * MiB, 512 * 1024, seed=2)
    lab.write(1, 9 * MiB + 4096, 4096, seed=3)
    incr_id = lab.replicate("incremental")
    incr = lab.wait_job(incr_id)
    assert incr["status"] == "completed", incr
    assert incr["sync_type"] == "incremental"
    # CBT reports exactly the written areas, so exactly the written bytes move
    assert incr["bytes_done"] == MiB + 512 * 1024 + 4096, incr
    assert _extents_files(lab, incr_id) == {
        keys[0]: [{"start": 7 * MiB, "length": MiB}],
        keys[1]: [
            {"start": 3 * MiB, "length": 512 * 1024},
            {"start": 9 * MiB + 4096, "length": 4096},
        ],
    }
    lab.assert_replicas_equal()
    second_ids = {d["disk_key"]: d["change_id"] for d in lab.context()["disks"]}
    assert all(second_ids[k] != first_ids[k] for k in keys), (first_ids, second_ids)
    lab.settled(exports)

    # an admin resets CBT: the old change IDs are void, the next sync copies in full
    reset_lab_cbt(lab.vc, lab.vm["id"])
    lab.write(0, 30 * MiB, 256 * 1024, seed=4)
    after_reset_id = lab.replicate("auto")
    after_reset = lab.wait_job(after_reset_id)
    assert after_reset["status"] == "completed", after_reset
    assert after_reset["sync_type"] == "full", after_reset
    assert after_reset["bytes_done"] > 256 * 1024, after_reset
    assert _extents_files(lab, after_reset_id) == dict.fromkeys(keys)
    lab.assert_replicas_equal()
    third_ids = {d["disk_key"]: d["change_id"] for d in lab.context()["disks"]}
    # a new tracking generation (the UUID before the "/" changed)
    assert all(third_ids[k].rsplit("/", 1)[0] != second_ids[k].rsplit("/", 1)[0] for k in keys), (
        second_ids,
        third_ids,
    )
    lab.settled(exports)

    # more guest writes, then the live failover: its final sync is an incremental through CBT
    lab.write(1, 12 * MiB, 128 * 1024, seed=5)
    rec = lab.start_failover()
    rec = lab.wait_failover(rec["id"])
    lab.assert_failed_over(rec)
    final = lab.job(rec["final_sync_job_id"])
    assert final["status"] == "completed" and final["sync_type"] == "incremental", final
    assert final["bytes_done"] == 128 * 1024, final
