"""The lab's vcsim reports, for a lab disk, exactly the areas the lab guest wrote between two
change IDs (from the disk's write journal), paged, and refuses change IDs from before a CBT
reset with FileFault — seen through the VMA's own CBT client."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from labtest.labvm import create_lab_vm, reset_lab_cbt, write_lab_disk
from labtest.vcsim import VcsimInfo, vcsim
from vma.errors import ChangeIdError
from vma.vmware import VSphereClient
from vma.vmware.cbt import coalesce

MiB = 1 << 20
WINDOW = MiB  # QueryChangedDiskAreas windows: a 4 MiB disk takes 4 pages


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VcsimInfo, Path]]:
    tmp = tmp_path_factory.mktemp("cbt")
    lab_dir = tmp / "lab"
    env = {"VCSIM_LAB_DIR": str(lab_dir), "VCSIM_CBT_WINDOW_BYTES": str(WINDOW)}
    with vcsim(tmp, extra_env=env) as info:
        yield info, lab_dir


@pytest.fixture
def client(sim: tuple[VcsimInfo, Path]) -> Iterator[VSphereClient]:
    info = sim[0]
    with VSphereClient(
        info.host, info.username, info.password, port=info.port, ca_file=info.ca_file
    ) as c:
        yield c


def _lab_vm(sim: tuple[VcsimInfo, Path], name: str) -> tuple[dict, str]:
    vm = create_lab_vm(sim[0], sim[1], name, [4 * MiB], seed=7)
    return vm, str(vm["disks"][0]["key"])


def test_changed_areas_are_exactly_the_writes_between_two_snapshots(
    sim: tuple[VcsimInfo, Path], client: VSphereClient
) -> None:
    vm, key = _lab_vm(sim, "cbt-exact")
    client.enable_cbt(vm["id"])
    first = client.create_snapshot(vm["id"], "first")
    base = client.disk_change_ids(vm["id"], first)[key]
    assert base and base.startswith("52 ")
    # one write straddles the 1 MiB window boundary, two touch each other, one is a zero write
    write_lab_disk(sim[1], vm["id"], key, MiB - 4096, b"\x01" * 8192)
    write_lab_disk(sim[1], vm["id"], key, 3 * MiB, (9, 65536))
    write_lab_disk(sim[1], vm["id"], key, 3 * MiB + 65536, (0, 4096))
    second = client.create_snapshot(vm["id"], "second")
    changed = client.query_changed_areas(vm["id"], second, key, base)
    assert changed == [(MiB - 4096, 8192), (3 * MiB, 65536 + 4096)]
    # from the second snapshot's own change ID nothing changed; the first snapshot's view of
    # its own change ID is empty too
    own = client.disk_change_ids(vm["id"], second)[key]
    assert own != base
    assert client.query_changed_areas(vm["id"], second, key, own) == []
    assert client.query_changed_areas(vm["id"], first, key, base) == []


def test_star_reports_every_written_area(
    sim: tuple[VcsimInfo, Path], client: VSphereClient
) -> None:
    vm, key = _lab_vm(sim, "cbt-star")
    client.enable_cbt(vm["id"])
    snap = client.create_snapshot(vm["id"], "s")
    image = vm["images"][key]
    mapped = json.loads(
        subprocess.run(
            ["qemu-img", "map", "--output=json", image], capture_output=True, text=True, check=True
        ).stdout
    )
    allocated = coalesce([(e["start"], e["length"]) for e in mapped if e["data"]])
    assert allocated  # the image has data and holes
    assert client.query_changed_areas(vm["id"], snap, key, "*") == allocated


def test_a_change_id_from_before_a_cbt_reset_is_a_file_fault(
    sim: tuple[VcsimInfo, Path], client: VSphereClient
) -> None:
    vm, key = _lab_vm(sim, "cbt-reset")
    client.enable_cbt(vm["id"])
    before = client.create_snapshot(vm["id"], "before")
    old = client.disk_change_ids(vm["id"], before)[key]
    client.remove_snapshot(vm["id"], before)
    reset_lab_cbt(sim[0], vm["id"])
    after = client.create_snapshot(vm["id"], "after")
    new = client.disk_change_ids(vm["id"], after)[key]
    assert new.rsplit("/", 1)[0] != old.rsplit("/", 1)[0]  # a new tracking generation
    # vCenter's answer to the old change ID, asked directly
    info = sim[0]
    si = SmartConnect(
        host=info.host,
        port=info.port,
        user=info.username,
        pwd=info.password,
        sslContext=ssl.create_default_context(cafile=info.ca_file),
    )
    try:
        ref = si.content.searchIndex.FindByUuid(uuid=vm["id"], vmSearch=True, instanceUuid=False)
        with pytest.raises(vim.fault.FileFault):
            ref.QueryChangedDiskAreas(
                snapshot=ref.snapshot.currentSnapshot,
                deviceKey=int(key),
                startOffset=0,
                changeId=old,
            )
    finally:
        Disconnect(si)
    # the VMA's client refuses it before asking (a full copy follows)
    with pytest.raises(ChangeIdError):
        client.query_changed_areas(vm["id"], after, key, old)
    # writes after the reset are tracked in the new generation
    write_lab_disk(sim[1], vm["id"], key, 2 * MiB, (5, 4096))
    later = client.create_snapshot(vm["id"], "later")
    assert client.query_changed_areas(vm["id"], later, key, new) == [(2 * MiB, 4096)]
