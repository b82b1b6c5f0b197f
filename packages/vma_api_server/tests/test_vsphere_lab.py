"""The VMA's vSphere source through the real server: vcsim (CBT from the lab's write journal)
+ nbdkit with the VDDK stand-in → qemu-nbd targets. Full, guest writes, an incremental moving
exactly the written bytes, a CBT reset that falls back to a full copy; replicas byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import pytest

from labtest.labvm import (
    create_lab_vm,
    lab_disk_sha256,
    reset_lab_cbt,
    vsphere_source_env,
    write_lab_disk,
)
from labtest.nbd import qemu_nbd
from labtest.vcsim import vcsim
from labtest.vma import vma_server
from migration_common import ConfigError, parse_job_progress
from vma_api_server.config import load_config

pytestmark = pytest.mark.slow
MiB = 1 << 20


def _body(job_id, vm, targets, previous=None):
    return {
        "job_id": job_id,
        "vm_id": vm["id"],
        "disks": [
            {
                "disk_key": d["key"],
                "target_uri": targets[d["key"]],
                "previous_change_id": (previous or {}).get(d["key"]),
            }
            for d in vm["disks"]
        ],
        "options": {"target_is_zero": previous is None},
    }


def _sync(vma, vm, targets, previous=None):
    job_id = str(uuid.uuid4())
    status, res = vma.request("POST", "replicate", _body(job_id, vm, targets, previous))
    assert status == 202, res
    done = vma.wait_job(job_id)
    assert done["status"] == "completed", done
    return job_id, parse_job_progress(done["progress"])


def test_vsphere_source_full_incremental_and_cbt_reset(tmp_path: Path) -> None:
    images = tmp_path / "images"
    with contextlib.ExitStack() as stack:
        vc = stack.enter_context(vcsim(tmp_path, extra_env={"VCSIM_LAB_DIR": str(images)}))
        vm = create_lab_vm(vc, images, "vsphere-lab", [8 * MiB, 4 * MiB], seed=2)
        vma = stack.enter_context(
            vma_server(tmp_path / "vma", vcenter=vc, env=vsphere_source_env(images))
        )
        keys = [d["key"] for d in vm["disks"]]
        raws = {}
        for d in vm["disks"]:
            raws[d["key"]] = tmp_path / f"target-{d['key']}.raw"
            with open(raws[d["key"]], "wb") as fh:
                fh.truncate(d["capacity_bytes"])
        exports = {k: stack.enter_context(qemu_nbd(raws[k], fmt="raw")) for k in keys}
        targets = {k: e.uri for k, e in exports.items()}

        def replicas_equal() -> None:
            for k in keys:
                assert lab_disk_sha256(vm["images"][k]) == lab_disk_sha256(raws[k], "raw"), k

        full_id, full = _sync(vma, vm, targets)
        assert {d.sync_type.value for d in full.disks} == {"full"}
        first = {d.disk_key: d.change_id for d in full.disks}
        assert all(c.startswith("52 ") for c in first.values()), first
        job_dir = vma.data_dir / "jobs" / full_id
        logs = sorted(p.name for p in job_dir.glob("nbdkit-*.log"))
        assert logs == sorted(f"nbdkit-{k}.log" for k in keys)
        assert not (job_dir / "vcenter-password").exists()  # removed when the job ended
        replicas_equal()

        write_lab_disk(images, vm["id"], keys[0], 1 * MiB + 512, os.urandom(3000))
        write_lab_disk(images, vm["id"], keys[0], 5 * MiB, (0, 65536))
        write_lab_disk(images, vm["id"], keys[1], 2 * MiB, (0x5A, 8192))
        incr_id, incr = _sync(vma, vm, targets, first)
        assert incr.sync_type.value == "incremental"
        by_key = {d.disk_key: d for d in incr.disks}
        # CBT reports exactly the written areas: not a byte more moves
        assert by_key[keys[0]].bytes_total == 3000 + 65536
        assert by_key[keys[1]].bytes_total == 8192
        extents = json.loads(
            (vma.data_dir / "jobs" / incr_id / f"extents-{keys[0]}.json").read_text()
        )
        assert extents == [
            {"start": 1 * MiB + 512, "length": 3000},
            {"start": 5 * MiB, "length": 65536},
        ]
        replicas_equal()
        second = {d.disk_key: d.change_id for d in incr.disks}

        reset_lab_cbt(vc, vm["id"])
        write_lab_disk(images, vm["id"], keys[1], 3 * MiB, os.urandom(4096))
        _, after_reset = _sync(vma, vm, targets, second)
        assert {d.sync_type.value for d in after_reset.disks} == {"full"}
        third = {d.disk_key: d.change_id for d in after_reset.disks}
        assert all(third[k].rsplit("/", 1)[0] != second[k].rsplit("/", 1)[0] for k in keys), (
            second,
            third,
        )
        replicas_equal()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, ["vddk"]),
        ("python '/opt/lab tools/vddk/plugin.py'", ["python", "/opt/lab tools/vddk/plugin.py"]),
    ],
)
def test_the_vddk_plugin_setting(monkeypatch, value, words) -> None:
    monkeypatch.setenv("VMA_API_TOKEN", "a-token-of-enough-length")
    if value is not None:
        monkeypatch.setenv("VMA_VDDK_PLUGIN", value)
    assert load_config()["VDDK_PLUGIN"] == words


def test_an_empty_vddk_plugin_setting_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("VMA_API_TOKEN", "a-token-of-enough-length")
    monkeypatch.setenv("VMA_VDDK_PLUGIN", " ")
    with pytest.raises(ConfigError, match="VMA_VDDK_PLUGIN"):
        load_config()
