"""oma.cloudstack.CloudStackClient against the real CloudStack simulator process."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from labtest.cloudstack import SimInfo, cloudstack_sim, inject_fault
from labtest.procs import free_port
from oma.cloudstack import CloudStackClient, is_removed, size_in_gib, wait_for_device
from oma.errors import CloudStackError, CloudStackUnreachable, OfferingMismatch

GIB = 1024**3


@pytest.fixture
def sim(tmp_path) -> Iterator[SimInfo]:
    with cloudstack_sim(tmp_path) as info:
        yield info


@pytest.fixture
def csc(sim: SimInfo) -> Iterator[CloudStackClient]:
    with CloudStackClient(
        sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05, job_timeout=30
    ) as c:
        yield c


def test_size_rounds_up_to_whole_gib() -> None:
    assert size_in_gib(1) == 1
    assert size_in_gib(GIB) == 1
    assert size_in_gib(GIB + 1) == 2
    with pytest.raises(ValueError):
        size_in_gib(0)


def test_catalog_and_test(sim, csc) -> None:
    assert csc.test() == {"ok": True, "zones": [{"id": sim.zone_id, "name": "zone1"}]}
    assert [z["id"] for z in csc.list_zones()] == [sim.zone_id]
    assert sim.custom_service_offering_id in {o["id"] for o in csc.list_service_offerings()}
    assert sim.custom_disk_offering_id in {o["id"] for o in csc.list_disk_offerings()}
    assert sim.network_id in [n["id"] for n in csc.list_networks(sim.zone_id)]
    assert sim.template_id in [t["id"] for t in csc.list_templates(sim.zone_id)]


def test_volume_lifecycle_with_device(sim, csc) -> None:
    vol = csc.create_volume(
        "mig-disk-2000",
        zone_id=sim.zone_id,
        disk_offering_id=sim.custom_disk_offering_id,
        size_bytes=GIB + 512,
    )
    assert vol["size"] == 2 * GIB and vol["state"] == "Allocated"
    assert csc.get_volume(vol["id"])["name"] == "mig-disk-2000"
    assert [v["id"] for v in csc.list_volumes(name="mig-disk-2000")] == [vol["id"]]
    attached = csc.attach_volume(vol["id"], sim.oma_vm_id)
    assert attached["virtualmachineid"] == sim.oma_vm_id and attached["state"] == "Ready"
    assert vol["id"] in {v["id"] for v in csc.list_volumes(vm_id=sim.oma_vm_id)}
    device = wait_for_device(vol["id"], sim.by_id_dir, timeout=5)
    assert device == (sim.state_dir / "volumes" / f"{vol['id']}.img").resolve()
    assert device.stat().st_size == 2 * GIB
    detached = csc.detach_volume(vol["id"])
    assert "virtualmachineid" not in detached
    csc.delete_volume(vol["id"])
    assert csc.get_volume(vol["id"]) is None
    csc.delete_volume(vol["id"], missing_ok=True)
    with pytest.raises(CloudStackError) as exc:
        csc.delete_volume(vol["id"])
    assert exc.value.errorcode == 431 and exc.value.command == "deleteVolume"


def test_attach_fault_becomes_cloudstack_error(sim, csc) -> None:
    vol = csc.create_volume(
        "v", zone_id=sim.zone_id, disk_offering_id=sim.custom_disk_offering_id, size_bytes=GIB
    )
    inject_fault(sim, "attachVolume", 530, errortext="Failed to attach volume v to VM oma")
    with pytest.raises(CloudStackError) as exc:
        csc.attach_volume(vol["id"], sim.oma_vm_id)
    assert exc.value.errorcode == 530
    assert exc.value.errortext == "Failed to attach volume v to VM oma"
    assert exc.value.command == "attachVolume"
    assert (
        str(exc.value) == "CloudStack error 530 (attachVolume): Failed to attach volume v to VM oma"
    )
    assert csc.get_volume(vol["id"]).get("virtualmachineid") is None


def test_state_rule_errors_carry_errortext(sim, csc) -> None:
    vol = csc.create_volume(
        "v", zone_id=sim.zone_id, disk_offering_id=sim.custom_disk_offering_id, size_bytes=GIB
    )
    csc.attach_volume(vol["id"], sim.oma_vm_id, device_id=4)
    with pytest.raises(CloudStackError) as exc:
        csc.delete_volume(vol["id"])
    assert exc.value.errorcode == 431
    assert exc.value.errortext == "Please specify a volume that is not attached to any VM."


def test_vm_lifecycle(sim, csc) -> None:
    vm = csc.deploy_vm(
        name="mig-vm-01",
        zone_id=sim.zone_id,
        service_offering_id=sim.custom_service_offering_id,
        template_id=sim.template_id,
        network_ids=[sim.network_id],
        macs={sim.network_id: "02:00:de:ad:be:ef"},
        cpus=2,
        memory_mb=2048,
    )
    assert vm["state"] == "Stopped"
    assert (vm["cpunumber"], vm["memory"]) == (2, 2048)
    assert vm["nic"][0]["macaddress"] == "02:00:de:ad:be:ef"
    assert csc.get_vm(vm["id"])["name"] == "mig-vm-01"
    assert [v["id"] for v in csc.list_vms(name="mig-vm-01")] == [vm["id"]]
    assert csc.start_vm(vm["id"])["state"] == "Running"
    assert csc.stop_vm(vm["id"], forced=True)["state"] == "Stopped"
    gone = csc.destroy_vm(vm["id"])
    assert (gone["state"], gone["expunged"]) == ("Expunging", True)
    assert csc.get_vm(vm["id"]) is None
    plain = csc.deploy_vm(
        name="plain",
        zone_id=sim.zone_id,
        service_offering_id=sim.service_offering_id,
        template_id=sim.template_id,
        network_ids=[sim.network_id],
        start=True,
    )
    assert plain["state"] == "Running" and plain["cpunumber"] == 1


def test_bad_credentials_are_401(sim) -> None:
    with (
        CloudStackClient(sim.endpoint, sim.api_key, "wrong", poll_interval=0.05) as bad,
        pytest.raises(CloudStackError) as exc,
    ):
        bad.test()
    assert exc.value.errorcode == 401
    assert "unable to verify user credentials" in exc.value.errortext


def test_unreachable_endpoint(caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}/client/api"
    with (
        CloudStackClient(url, "key", "very-secret-value", poll_interval=0.05) as dead,
        caplog.at_level(logging.DEBUG),
        pytest.raises(CloudStackUnreachable) as exc,
    ):
        dead.list_zones()
    assert url in str(exc.value) and "signature" not in str(exc.value)
    assert "very-secret-value" not in caplog.text


def test_job_timeout_is_an_error(sim) -> None:
    inject_fault(sim, "createVolume", None, delay=5.0)
    with (
        CloudStackClient(
            sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05, job_timeout=1
        ) as c,
        pytest.raises(CloudStackError) as exc,
    ):
        c.create_volume(
            "slow",
            zone_id=sim.zone_id,
            disk_offering_id=sim.custom_disk_offering_id,
            size_bytes=GIB,
        )
    assert "Timeout waiting for async job result" in exc.value.errortext
    assert exc.value.errorcode == 408


def test_wrong_url_is_an_error(sim) -> None:
    url = sim.endpoint.replace("/client/api", "/nope")
    with (
        CloudStackClient(url, sim.api_key, sim.secret_key) as c,
        pytest.raises(CloudStackError) as exc,
    ):
        c.list_zones()
    assert exc.value.errorcode == 404


def test_snapshot_lifecycle(sim, csc) -> None:
    vol = csc.create_volume(
        "snap-me", zone_id=sim.zone_id, disk_offering_id=sim.custom_disk_offering_id, size_bytes=GIB
    )
    with pytest.raises(CloudStackError) as exc:  # Allocated volumes have no storage yet
        csc.create_snapshot(vol["id"])
    assert exc.value.errorcode == 431 and exc.value.command == "createSnapshot"
    csc.attach_volume(vol["id"], sim.oma_vm_id)
    device = wait_for_device(vol["id"], sim.by_id_dir, timeout=5)
    with open(device, "r+b") as fh:
        fh.write(b"generation-1")
    with pytest.raises(CloudStackError) as exc:  # KVM: not while the (OMA) VM runs
        csc.create_snapshot(vol["id"])
    assert exc.value.errorcode == 530 and "kvm.snapshot.enabled" in str(exc.value)
    csc.detach_volume(vol["id"])
    snap = csc.create_snapshot(vol["id"], name="pre-test-failover")
    assert snap["state"] == "BackedUp" and snap["name"] == "pre-test-failover"
    assert [s["id"] for s in csc.list_snapshots(vol["id"])] == [snap["id"]]
    with open(sim.state_dir / "volumes" / f"{vol['id']}.img", "r+b") as fh:
        fh.write(b"generation-2")
    csc.revert_snapshot(snap["id"])
    with open(sim.state_dir / "volumes" / f"{vol['id']}.img", "rb") as fh:
        assert fh.read(12) == b"generation-1"
    csc.delete_snapshot(snap["id"])
    assert csc.get_snapshot(snap["id"]) is None


def _client(sim: SimInfo) -> CloudStackClient:
    return CloudStackClient(
        sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05, job_timeout=30
    )


def _deploy(sim: SimInfo, csc: CloudStackClient, name: str, offering: str, **kw) -> dict:
    return csc.deploy_vm(
        name=name,
        zone_id=sim.zone_id,
        service_offering_id=sim.fixture["service_offering_ids"][offering],
        template_id=sim.template_id,
        network_ids=[sim.network_id],
        **kw,
    )


def test_fixed_disk_offering_gets_no_size_and_must_hold_the_disk(sim, csc) -> None:
    small = sim.fixture["disk_offering_ids"]["Small"]
    vol = csc.create_volume("fixed", zone_id=sim.zone_id, disk_offering_id=small, size_bytes=GIB)
    assert vol["size"] == 5 * GIB  # the offering's size: CloudStack refuses a size for it
    with pytest.raises(OfferingMismatch) as exc:
        csc.create_volume(
            "too-big", zone_id=sim.zone_id, disk_offering_id=small, size_bytes=5 * GIB + 1
        )
    assert str(exc.value) == (
        f"CloudStack error (createVolume): disk too-big has {5 * GIB + 1} bytes (6 GB) but disk "
        "offering Small is not customized and gives every volume 5 GB"
    )
    assert csc.list_volumes(name="too-big") == []
    with pytest.raises(OfferingMismatch, match="disk offering nope does not exist"):
        csc.create_volume("x", zone_id=sim.zone_id, disk_offering_id="nope", size_bytes=GIB)


def test_custom_size_limit_read_from_cloudstack_is_checked_before_asking(
    tmp_path, monkeypatch
) -> None:
    with (
        cloudstack_sim(tmp_path, settings={"custom.diskoffering.size.max": 2}) as sim,
        _client(sim) as csc,
    ):
        custom = sim.custom_disk_offering_id
        # the key cannot read the setting (listConfigurations is refused): CloudStack decides
        assert csc.custom_disk_max_gib() is None
        with pytest.raises(CloudStackError) as exc:
            csc.create_volume(
                "big", zone_id=sim.zone_id, disk_offering_id=custom, size_bytes=3 * GIB
            )
        assert exc.value.errorcode == 431 and "out of allowed range" in exc.value.errortext
        # a key that reads it (an admin's on real CloudStack): the client refuses first
        values = {"custom.diskoffering.size.max": "2", "storage.max.volume.size": "2000"}
        monkeypatch.setattr(csc, "setting", values.get)
        assert csc.custom_disk_max_gib() == 2
        ok = csc.create_volume(
            "two", zone_id=sim.zone_id, disk_offering_id=custom, size_bytes=2 * GIB
        )
        assert ok["size"] == 2 * GIB
        with pytest.raises(OfferingMismatch) as exc:
            csc.create_volume(
                "three", zone_id=sim.zone_id, disk_offering_id=custom, size_bytes=2 * GIB + 1
            )
        assert "takes at most 2 GB (CloudStack's custom.diskoffering.size.max" in str(exc.value)
        assert csc.list_volumes(name="three") == []


def test_deploy_sends_only_the_values_the_offering_leaves_open(sim, csc) -> None:
    fixed = _deploy(sim, csc, "fixed-vm", "Small", cpus=4, memory_mb=4096)
    assert (fixed["cpunumber"], fixed["cpuspeed"], fixed["memory"]) == (1, 1000, 1024)
    speed = _deploy(
        sim, csc, "speed-vm", "Custom fixed speed", cpus=2, memory_mb=2048, cpu_speed_mhz=1000
    )
    assert (speed["cpunumber"], speed["cpuspeed"], speed["memory"]) == (2, 2000, 2048)
    custom = _deploy(sim, csc, "custom-vm", "Custom", cpus=3, memory_mb=3072, cpu_speed_mhz=1500)
    assert (custom["cpunumber"], custom["cpuspeed"], custom["memory"]) == (3, 1500, 3072)
    with pytest.raises(OfferingMismatch, match="leaves cpuNumber open but no cpus"):
        _deploy(sim, csc, "no-cpus", "Custom", memory_mb=1024)
    assert csc.list_vms(name="no-cpus") == []


def test_deploy_with_boot_type_and_mode(sim, csc) -> None:
    vm = _deploy(sim, csc, "uefi-vm", "Small", boot_type="UEFI", boot_mode="SECURE")
    assert vm["details"]["UEFI"] == "SECURE"
    with pytest.raises(CloudStackError) as exc:
        _deploy(sim, csc, "bad-boot", "Small", boot_type="UEFI")
    assert exc.value.errorcode == 431 and "bootmode must be specified" in exc.value.errortext


def test_destroyed_vms_are_gone_for_list_vms(sim, csc) -> None:
    vm = _deploy(sim, csc, "to-destroy", "Small")
    out = csc.destroy_vm(vm["id"], expunge=False)
    assert (out["state"], out["expunged"]) == ("Destroyed", False)
    assert csc.list_vms(name="to-destroy") == []
    assert vm["id"] not in {v["id"] for v in csc.list_vms()}
    found = csc.get_vm(vm["id"])  # admins still see it by id
    assert found["state"] == "Destroyed" and is_removed(found)
    assert not is_removed(csc.get_vm(sim.oma_vm_id))


def test_expunge_refused_for_a_user_key_destroys_without_it(tmp_path, caplog) -> None:
    with (
        cloudstack_sim(tmp_path, settings={"sim.account.type": "user"}) as sim,
        _client(sim) as csc,
        caplog.at_level(logging.INFO),
    ):
        vm = _deploy(sim, csc, "user-vm", "Small")
        out = csc.destroy_vm(vm["id"])
        assert (out["state"], out["expunged"]) == ("Destroyed", False)
        assert "expunge refused" in caplog.text
        assert csc.list_vms(name="user-vm") == []
        assert csc.custom_disk_max_gib() is None  # listConfigurations is for admins only
