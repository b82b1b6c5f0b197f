"""What the failed-over VM looks like (oma.workflows.failover.target_vm): host name, firmware, boot
disk, NICs and template, from a source VM's discovery spec."""

from __future__ import annotations

import pytest

from oma.workflows.failover.target_vm import (
    TargetInvalid,
    boot_disk,
    boot_firmware,
    choose_template,
    guest_os_type,
    is_host_name,
    nic_plan,
    vm_name_for,
)

TEMPLATES = [
    {"id": "t-rhel8", "name": "rhel8-migrated", "ostypename": "Red Hat Enterprise Linux 8"},
    {"id": "t-ubuntu", "name": "ubuntu-22.04", "ostypename": "Ubuntu 22.04 LTS"},
    {"id": "t-win", "name": "windows-2019", "ostypename": "Windows Server 2019 (64-bit)"},
]


# -- host name ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("web-1", True),
        ("Web-1", True),  # CloudStack compares case-insensitively
        ("a", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        ("1web", False),  # a host name must not start with a digit
        ("-web", False),
        ("web-", False),
        ("web_1", False),
        ("web.lab", False),
        ("wéb", False),
    ],
)
def test_is_host_name_is_cloudstacks_rule(name: str, valid: bool) -> None:
    assert is_host_name(name) is valid


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("web_1.lab", "web-1-lab"),
        ("DB Server (old)", "DB-Server-old"),
        ("  --web--  ", "web"),
        ("2019-dc", "vm-2019-dc"),
        ("café-01", "cafe-01"),
        ("日本", "vm"),
        ("", "vm"),
        ("x" * 70, "x" * 63),
        ("a" + "-" * 70 + "b", "a-b"),  # a run of separators becomes one hyphen
        ("x" * 62 + "_y", "x" * 62),  # cut at 63, then the trailing hyphen goes
        ("9" * 70, "vm-" + "9" * 60),
    ],
)
def test_vm_name_for_always_gives_a_valid_host_name(source: str, expected: str) -> None:
    assert vm_name_for(source) == expected
    assert is_host_name(expected)


# -- firmware ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"firmware": "efi", "secure_boot": True}, ("UEFI", "SECURE")),
        ({"firmware": "efi", "secure_boot": False}, ("UEFI", "LEGACY")),
        ({"firmware": "bios"}, ("BIOS", "LEGACY")),
        ({}, ("BIOS", "LEGACY")),
    ],
)
def test_boot_firmware_follows_the_source(spec: dict, expected: tuple[str, str]) -> None:
    assert boot_firmware(spec) == expected


# -- boot disk ---------------------------------------------------------------------------------


def _disk(key: str, kind: str | None, bus: int = 0, unit: int = 0) -> dict:
    return {"key": key, "controller_type": kind, "controller_bus": bus, "unit_number": unit}


def test_boot_disk_prefers_request_then_boot_order_then_controller_order() -> None:
    spec = {
        "disks": [_disk("2000", "scsi"), _disk("2001", "scsi", unit=1), _disk("16000", "sata")],
        "boot_order": [{"type": "cdrom"}, {"type": "disk", "key": "2001"}],
    }
    keys = ["2000", "2001", "16000"]
    assert boot_disk(keys, spec, "2000") == ("2000", "requested")
    assert boot_disk(keys, spec) == ("2001", "boot order")
    assert boot_disk(keys, {**spec, "boot_order": []}) == ("16000", "controller order")


@pytest.mark.parametrize(
    ("disks", "expected"),
    [
        ([_disk("2000", "scsi"), _disk("16000", "sata")], "16000"),
        ([_disk("2000", "scsi"), _disk("3000", "ide", unit=1), _disk("16000", "sata")], "3000"),
        ([_disk("2000", "scsi"), _disk("31000", "nvme")], "31000"),
        ([_disk("16000", "sata", unit=1), _disk("16001", "sata", unit=0)], "16001"),
        ([_disk("2000", "scsi", bus=1), _disk("2016", "scsi", bus=0, unit=3)], "2016"),
        ([_disk("2000", None), _disk("2001", "scsi", unit=5)], "2001"),
    ],
)
def test_boot_disk_by_controller_ide_sata_nvme_scsi(disks: list[dict], expected: str) -> None:
    keys = sorted((d["key"] for d in disks), key=lambda k: (len(k), k))
    assert boot_disk(keys, {"disks": disks}) == (expected, "controller order")


def test_boot_disk_falls_back_to_the_first_key_without_controller_types() -> None:
    assert boot_disk(["2000", "2001"], {}) == ("2000", "first disk key")
    # a boot order naming a disk that is not protected is ignored
    spec = {"boot_order": [{"type": "disk", "key": "9999"}]}
    assert boot_disk(["2000", "2001"], spec) == ("2000", "first disk key")


def test_boot_disk_refusals_name_the_field() -> None:
    with pytest.raises(TargetInvalid, match=r"boot_disk_key 7 is not a disk of this VM") as err:
        boot_disk(["2000"], {}, "7")
    assert err.value.field == "boot_disk_key"
    with pytest.raises(TargetInvalid, match="no disks"):
        boot_disk([], {})


# -- NICs --------------------------------------------------------------------------------------


def _nic(label: str, network: str, mac: str) -> dict:
    return {"label": label, "network": network, "mac": mac}


def test_one_nic_per_source_nic_in_source_order_with_its_mac() -> None:
    spec = {
        "nics": [
            _nic("Network adapter 1", "Backend", "00:50:56:AA:00:01"),
            _nic("Network adapter 2", "VM Network", "00:50:56:aa:00:02"),
        ]
    }
    plan = nic_plan(spec, {"VM Network": "net-front", "Backend": "net-back"})
    assert [(n.network_id, n.mac) for n in plan] == [
        ("net-back", "00:50:56:aa:00:01"),
        ("net-front", "00:50:56:aa:00:02"),
    ]
    unkept = nic_plan(spec, {"VM Network": "net-front", "Backend": "net-back"}, keep_macs=False)
    assert [n.mac for n in unkept] == [None, None]


def test_two_nics_on_one_network_are_refused_naming_both() -> None:
    spec = {
        "nics": [
            _nic("Network adapter 1", "VM Network", "00:50:56:aa:00:01"),
            _nic("Network adapter 2", "Backend", "00:50:56:aa:00:02"),
        ]
    }
    with pytest.raises(TargetInvalid) as err:
        nic_plan(spec, {"VM Network": "net-1", "Backend": "net-1"})
    assert err.value.field == "network_mappings"
    message = str(err.value)
    assert "NIC 1 'Network adapter 1' MAC 00:50:56:aa:00:01" in message
    assert "NIC 2 'Network adapter 2' MAC 00:50:56:aa:00:02" in message
    assert "both mapped to network net-1" in message


def test_an_unmapped_source_network_is_refused() -> None:
    spec = {"nics": [_nic("Network adapter 1", "DMZ", "00:50:56:aa:00:01")]}
    with pytest.raises(TargetInvalid, match="source network 'DMZ' of NIC 1"):
        nic_plan(spec, {"VM Network": "net-1"})


def test_a_spec_without_nics_gets_one_nic_per_mapped_network() -> None:
    plan = nic_plan({}, {"a": "net-1", "b": "net-2", "c": "net-1"})
    assert [n.network_id for n in plan] == ["net-1", "net-2"]


# -- template ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"guest_os": "rhel8_64Guest"}, "Red Hat Enterprise Linux 8"),
        ({"guest_os": "rhel7_64Guest"}, "Red Hat Enterprise Linux 7"),
        ({"guest_os": "ubuntu64Guest"}, "Ubuntu"),
        ({"guest_os": "windows2019srv_64Guest"}, "Windows Server 2019"),
        ({"guest_os": "windows2019srvNext_64Guest"}, "Windows Server 2022"),
        ({"guest_os": "debian11_64Guest"}, "Debian GNU/Linux 11"),
        (
            {"guest_os": "x", "guest_full_name": "Red Hat Enterprise Linux 9 (64-bit)"},
            "Red Hat Enterprise Linux 9",
        ),
        (
            {"guest_os": "x", "guest_full_name": "Microsoft Windows Server 2016 (64-bit)"},
            "Windows Server 2016",
        ),
        ({"guest_os": "x", "guest_full_name": "Ubuntu Linux (64-bit)"}, "Ubuntu"),
        ({"guest_os": "solaris11_64Guest", "guest_full_name": "solaris11_64Guest"}, None),
        ({"guest_os": "x", "guest_full_name": "Other 3.x Linux (64-bit)"}, None),
        ({}, None),
    ],
)
def test_guest_os_type_from_guest_id_then_full_name(spec: dict, expected: str | None) -> None:
    assert guest_os_type(spec) == expected


def test_template_matching_the_guest_os_is_chosen() -> None:
    template, why = choose_template(TEMPLATES, {"guest_os": "rhel8_64Guest"})
    assert template["id"] == "t-rhel8" and why == "OS type Red Hat Enterprise Linux 8"
    template, _ = choose_template(TEMPLATES, {"guest_os": "windows2019srv_64Guest"})
    assert template["id"] == "t-win"
    # "Red Hat Enterprise Linux 8" does not match an 8.x-less "Red Hat Enterprise Linux 80"
    odd = [{"id": "t-80", "name": "odd", "ostypename": "Red Hat Enterprise Linux 80"}]
    with pytest.raises(TargetInvalid, match="no template has the OS type"):
        choose_template(odd, {"guest_os": "rhel8_64Guest"})


def test_requested_template_wins_and_must_exist() -> None:
    template, why = choose_template(TEMPLATES, {"guest_os": "rhel8_64Guest"}, "t-win")
    assert (template["id"], why) == ("t-win", "requested")
    with pytest.raises(TargetInvalid) as err:
        choose_template(TEMPLATES, {}, "t-gone")
    assert err.value.field == "template_id"
    assert "template t-gone does not exist" in str(err.value)
    assert "rhel8-migrated (t-rhel8, Red Hat Enterprise Linux 8)" in str(err.value)


def test_no_matching_template_is_refused_listing_the_templates() -> None:
    with pytest.raises(TargetInvalid) as err:
        choose_template(TEMPLATES, {"guest_os": "debian11_64Guest"})
    message = str(err.value)
    assert err.value.field == "template_id"
    assert "no template has the OS type 'Debian GNU/Linux 11'" in message
    assert "ubuntu-22.04 (t-ubuntu, Ubuntu 22.04 LTS)" in message
    with pytest.raises(TargetInvalid, match=r"guest OS \(solaris11_64Guest\) maps to no"):
        choose_template(TEMPLATES, {"guest_os": "solaris11_64Guest"})
    with pytest.raises(TargetInvalid, match="the zone has no templates"):
        choose_template([], {"guest_os": "rhel8_64Guest"})


def test_several_matching_templates_are_refused() -> None:
    two = [*TEMPLATES, {"id": "t-u20", "name": "ubuntu-20.04", "ostypename": "Ubuntu 20.04 LTS"}]
    with pytest.raises(TargetInvalid, match="2 templates match the OS type 'Ubuntu'"):
        choose_template(two, {"guest_os": "ubuntu64Guest"})
    # a template that is not ready does not count
    not_ready = [{**two[-1], "isready": False}, *TEMPLATES]
    assert choose_template(not_ready, {"guest_os": "ubuntu64Guest"})[0]["id"] == "t-ubuntu"
