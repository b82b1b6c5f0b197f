"""What a target's disk offering can carry: the rule functions, the target test's report and the
409 of a replication request, against the real CloudStack simulator process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labtest.cloudstack import SimInfo, cloudstack_sim
from oma.cloudstack.offerings import disk_offering_facts, disk_offering_problems, offering_details
from oma.errors import OfferingMismatch

GIB = 1024**3


def _vm(capacity: int, vm_id: str = "4200bbbb-0000-4000-8000-000000000001") -> dict[str, Any]:
    return {
        "id": vm_id,
        "name": "big-01",
        "path": "/DC0/vm/big-01",
        "disks": [
            {"key": "2000", "label": "Hard disk 1", "capacity_bytes": GIB, "unit_number": 0},
            {"key": "2001", "label": "Hard disk 2", "capacity_bytes": capacity, "unit_number": 1},
        ],
    }


def test_offering_details_follow_what_the_offering_leaves_open() -> None:
    fixed = {"name": "Small", "cpunumber": 1, "cpuspeed": 1000, "memory": 1024}
    assert offering_details(fixed, cpus=4, memory_mb=4096, cpu_speed_mhz=1000) == {}
    custom = {"name": "Custom", "iscustomized": True}
    assert offering_details(custom, cpus=2, memory_mb=2048, cpu_speed_mhz=1500) == {
        "cpuNumber": 2,
        "cpuSpeed": 1500,
        "memory": 2048,
    }
    speed_fixed = {"name": "Custom fixed speed", "iscustomized": True, "cpuspeed": 2000}
    assert offering_details(speed_fixed, cpus=2, memory_mb=2048, cpu_speed_mhz=1000) == {
        "cpuNumber": 2,
        "memory": 2048,
    }
    with pytest.raises(OfferingMismatch, match="Custom fixed speed leaves memory open"):
        offering_details(speed_fixed, cpus=2, memory_mb=None, cpu_speed_mhz=1000)


def test_disk_offering_problems_name_each_disk() -> None:
    fixed = disk_offering_facts(
        {"id": "d1", "name": "Small", "disksize": 5}, max_gib=1024, max_source="default"
    )
    assert disk_offering_problems(fixed, {"a": 5 * GIB, "b": 1}) == []
    assert disk_offering_problems(fixed, {"big": 5 * GIB + 1}) == [
        f"disk big has {5 * GIB + 1} bytes (6 GB) but disk offering Small is not customized and "
        "gives every volume 5 GB"
    ]
    custom = disk_offering_facts(
        {"id": "d2", "name": "Custom", "iscustomized": True, "disksize": 0},
        max_gib=2,
        max_source="target",
    )
    assert disk_offering_problems(custom, {"a": 2 * GIB}) == []
    assert disk_offering_problems(custom, {"b": 2 * GIB + 1}) == [
        f"disk b has {2 * GIB + 1} bytes (3 GB) but disk offering Custom takes at most 2 GB "
        "(the target's disk_size_max_gib)"
    ]
    unknown = disk_offering_facts(
        {"id": "d2", "name": "Custom", "iscustomized": True}, max_gib=None, max_source=None
    )
    assert disk_offering_problems(unknown, {"huge": 5000 * GIB}) == []


# ----- through the API, against the simulator ------------------------------------------------
@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimInfo]:
    with cloudstack_sim(tmp_path / "cs") as info:
        yield info


def _target(client: Any, auth: Any, sim: SimInfo, offering: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "lab-cs",
        "endpoint": sim.endpoint,
        "api_key": sim.api_key,
        "secret_key": sim.secret_key,
        "zone_id": sim.zone_id,
        "oma_vm_id": sim.oma_vm_id,
        "disk_offering_id": offering,
        **extra,
    }
    r = client.post("/api/v1/cloudstack-targets", headers=auth.admin, json=body)
    assert r.status_code == 201, r.json
    return r.json


def _context(client: Any, auth: Any, vm: dict[str, Any]) -> dict[str, Any]:
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": "vma-1", "url": "http://127.0.0.1:9", "token": "vma-secret-tok"},
    )
    assert r.status_code == 201, r.json
    r = client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": r.json["id"], "vcenter": "vc.lab", "vms": [vm]},
    )
    assert r.status_code == 201, r.json
    return r.json["added"][0]


@pytest.mark.slow
def test_fixed_offering_too_small_is_reported_and_refused(
    client: Any, auth: Any, sim: SimInfo
) -> None:
    small = sim.fixture["disk_offering_ids"]["Small"]
    target = _target(client, auth, sim, small)
    ctx = _context(client, auth, _vm(6 * GIB))
    disk = f"disk Hard disk 2 (key 2001) has {6 * GIB} bytes (6 GB)"

    # the first request reads the offering from CloudStack and stores it on the target
    r = client.post(
        "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"]}
    )
    assert r.status_code == 409, r.json
    error = r.json["error"]
    assert (error["code"], error["field"]) == ("disk_too_large", "vm_context_id")
    assert disk in error["message"] and "Small is not customized" in error["message"]
    assert error["message"].endswith(
        "Choose a customized disk offering for the target (its disk_offering_id)."
    )
    assert "Hard disk 1" not in error["message"]
    stored = client.get(f"/api/v1/cloudstack-targets/{target['id']}", headers=auth.viewer).json
    assert stored["disk_offering_facts"]["id"] == small
    assert stored["disk_offering_facts"]["iscustomized"] is False
    r = client.post("/api/v1/replications", headers=auth.operator, json={"vm_id": _vm(0)["id"]})
    assert r.status_code == 409 and r.json["error"]["field"] == "vm_id"

    r = client.post(f"/api/v1/cloudstack-targets/{target['id']}/test", headers=auth.operator)
    assert r.status_code == 200 and r.json["ok"] is False
    offering = r.json["disk_offering"]
    assert (offering["name"], offering["customized"], offering["disksize_gib"]) == (
        "Small",
        False,
        5,
    )
    assert offering["problems"] == [
        f"disk Hard disk 2 (key 2001) of VM big-01 has {6 * GIB} bytes (6 GB) but disk offering "
        "Small is not customized and gives every volume 5 GB"
    ]
    assert offering["problems"][0] in r.json["error"]
    assert offering["suggested"] == {"id": sim.custom_disk_offering_id, "name": "Custom"}
    assert any("fixed 5 GB" in n for n in offering["notes"])

    # /offerings says which offering could carry the known disks
    r = client.get(f"/api/v1/cloudstack-targets/{target['id']}/offerings", headers=auth.viewer)
    by_id = {o["id"]: o for o in r.json["disk_offerings"]}
    assert by_id[sim.custom_disk_offering_id]["replica_problems"] == []
    assert len(by_id[small]["replica_problems"]) == 1

    # switching to the customized offering forgets the stored facts; the request then passes
    r = client.patch(
        f"/api/v1/cloudstack-targets/{target['id']}",
        headers=auth.admin,
        json={"disk_offering_id": sim.custom_disk_offering_id},
    )
    assert r.status_code == 200 and r.json["disk_offering_facts"] is None
    r = client.post(
        "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"]}
    )
    assert r.status_code == 202, r.json


@pytest.mark.slow
def test_fixed_offering_large_enough_passes_with_a_note(
    client: Any, auth: Any, sim: SimInfo
) -> None:
    target = _target(client, auth, sim, sim.fixture["disk_offering_ids"]["Small"])
    ctx = _context(client, auth, _vm(5 * GIB))
    r = client.post(f"/api/v1/cloudstack-targets/{target['id']}/test", headers=auth.operator)
    assert r.json["ok"] is True, r.json
    assert r.json["disk_offering"]["problems"] == []
    assert any(
        "every replica volume gets its fixed 5 GB" in n for n in r.json["disk_offering"]["notes"]
    )
    r = client.post(
        "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"]}
    )
    assert r.status_code == 202, r.json


@pytest.mark.slow
def test_custom_size_limit_of_the_target(client: Any, auth: Any, tmp_path: Path) -> None:
    # a user key cannot read custom.diskoffering.size.max: the target's own limit applies
    with cloudstack_sim(tmp_path / "cs", settings={"sim.account.type": "user"}) as sim:
        target = _target(client, auth, sim, sim.custom_disk_offering_id)
        ctx = _context(client, auth, _vm(3 * GIB))
        r = client.post(f"/api/v1/cloudstack-targets/{target['id']}/test", headers=auth.operator)
        assert r.json["ok"] is True, r.json
        offering = r.json["disk_offering"]
        assert (offering["max_gib"], offering["max_source"]) == (1024, "default")
        assert offering["notes"] == [
            "custom sizes up to 1024 GB (CloudStack's default custom.diskoffering.size.max, "
            "assumed because the API key cannot read the setting)"
        ]
        r = client.patch(
            f"/api/v1/cloudstack-targets/{target['id']}",
            headers=auth.admin,
            json={"disk_size_max_gib": 2},
        )
        assert r.status_code == 200 and r.json["disk_size_max_gib"] == 2
        r = client.post(f"/api/v1/cloudstack-targets/{target['id']}/test", headers=auth.operator)
        offering = r.json["disk_offering"]
        assert (offering["max_gib"], offering["max_source"]) == (2, "target")
        assert r.json["ok"] is False and "takes at most 2 GB" in r.json["error"]
        r = client.post(
            "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"]}
        )
        assert r.status_code == 409 and r.json["error"]["code"] == "disk_too_large"
        assert r.json["error"]["message"] == (
            f"VM big-01 cannot be replicated to CloudStack target lab-cs: disk Hard disk 2 "
            f"(key 2001) has {3 * GIB} bytes (3 GB) but disk offering Custom takes at most 2 GB "
            "(the target's disk_size_max_gib). Raise CloudStack's custom.diskoffering.size.max "
            "(or, when the API key cannot read it, the target's disk_size_max_gib)."
        )


def test_bad_size_limit_names_the_field(client: Any, auth: Any) -> None:
    body = {
        "name": "cs",
        "endpoint": "http://127.0.0.1:9/client/api",
        "api_key": "AK",
        "secret_key": "SK",
        "zone_id": "z1",
        "oma_vm_id": "vm1",
    }
    for bad in (0, "10", True, 1.5):
        r = client.post(
            "/api/v1/cloudstack-targets", headers=auth.admin, json=dict(body, disk_size_max_gib=bad)
        )
        assert r.status_code == 400 and r.json["error"]["field"] == "disk_size_max_gib", bad
    r = client.post("/api/v1/cloudstack-targets", headers=auth.admin, json=body)
    assert r.status_code == 201 and r.json["disk_size_max_gib"] is None
    r = client.patch(
        f"/api/v1/cloudstack-targets/{r.json['id']}",
        headers=auth.admin,
        json={"disk_size_max_gib": -1},
    )
    assert r.status_code == 400 and r.json["error"]["field"] == "disk_size_max_gib"


def test_unreachable_cloudstack_leaves_the_check_to_the_workflow(client: Any, auth: Any) -> None:
    r = client.post(
        "/api/v1/cloudstack-targets",
        headers=auth.admin,
        json={
            "name": "cs",
            "endpoint": "http://127.0.0.1:9/client/api",
            "api_key": "AK",
            "secret_key": "SK",
            "zone_id": "z1",
            "oma_vm_id": "vm1",
            "disk_offering_id": "d1",
        },
    )
    assert r.status_code == 201
    ctx = _context(client, auth, _vm(6 * GIB))
    r = client.post(
        "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"]}
    )
    assert r.status_code == 202, r.json
