"""The lab vcsim (tools/vcsim, labtest.vcsim): cached build, secrets off argv, stopped by PID."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from labtest import vcsim as vcsim_mod
from labtest.procs import free_port

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_build_is_cached() -> None:
    first = vcsim_mod.build()
    mtime = first.stat().st_mtime_ns
    second = vcsim_mod.build()
    assert second == first
    assert second.stat().st_mtime_ns == mtime  # not rebuilt
    assert os.access(first, os.X_OK)


def test_credentials_stay_off_the_command_line_and_the_log(tmp_path: Path) -> None:
    with vcsim_mod.vcsim(tmp_path) as info:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().decode()
        environ = Path(f"/proc/{info.pid}/environ").read_bytes().decode()
        assert info.password not in cmdline and info.username not in cmdline
        assert f"VCSIM_PASSWORD={info.password}" in environ
        assert info.password not in repr(info)
        assert Path(info.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
    log = (tmp_path / "vcsim.log").read_text()
    assert f"VCSIM_URL=https://127.0.0.1:{info.port}/sdk" in log
    assert info.password not in log


def test_stopped_by_pid_even_when_the_block_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), vcsim_mod.vcsim(tmp_path) as info:
        pid = info.pid
        assert _alive(pid)
        raise RuntimeError("boom")
    assert not _alive(pid)


def test_launcher_refuses_half_a_login(tmp_path: Path) -> None:
    binary = vcsim_mod.build()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCSIM_")}
    env["VCSIM_USERNAME"] = "only-user"
    result = subprocess.run(
        [str(binary), "-port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "VCSIM_USERNAME and VCSIM_PASSWORD" in result.stderr


def test_patched_simulator_behaves_like_vcenter_for_pyvmomi(tmp_path: Path) -> None:
    """The local patch (tools/vcsim/patches): what raw pyVmomi ≥ 8 relies on."""
    with vcsim_mod.vcsim(tmp_path) as info:
        si = SmartConnect(
            host=info.host,
            port=info.port,
            user=info.username,
            pwd=info.password,
            sslContext=ssl.create_default_context(cafile=info.ca_file),
        )
        try:
            content = si.content
            view = content.viewManager.CreateContainerView(
                content.rootFolder, [vim.VirtualMachine], True
            )
            vm = view.view[0]
            view.Destroy()
            # Fetch of unset properties answers None instead of crashing the simulator
            assert vm.snapshot is None
            assert vm.parentVApp is None
            assert vm.capability.changeTrackingSupported is True
            disk = next(
                d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
            )
            assert disk.capacityInBytes == disk.capacityInKB * 1024
            # CBT off: QueryChangedDiskAreas is a FileFault, as on vCenter
            assert WaitForTask(vm.CreateSnapshot_Task("s0", "", False, False)) == "success"
            with pytest.raises(vim.fault.FileFault):
                vm.QueryChangedDiskAreas(
                    snapshot=vm.snapshot.currentSnapshot,
                    deviceKey=disk.key,
                    startOffset=0,
                    changeId="*",
                )
            # RemoveSnapshot_Task's entity is the VM, so pyVim's WaitForTask works
            assert WaitForTask(vm.snapshot.currentSnapshot.RemoveSnapshot_Task(False)) == "success"
            assert vm.snapshot is None
            # ShutdownGuest needs running tools
            if vm.runtime.powerState != "poweredOn":
                WaitForTask(vm.PowerOnVM_Task())
            with pytest.raises(vim.fault.ToolsUnavailable):
                vm.ShutdownGuest()
        finally:
            Disconnect(si)


def test_discovery_reports_firmware_boot_order_controllers_and_nics(tmp_path: Path) -> None:
    """What the OMA builds the failed-over VM from: firmware + secure boot, the boot order,
    each disk's controller type/bus/unit, the guest OS and each NIC's key, network and MAC."""
    from labtest.labvm import create_lab_vm
    from vma.vmware import VSphereClient

    mib = 1 << 20
    with vcsim_mod.vcsim(tmp_path / "vc") as info:
        made = create_lab_vm(
            info,
            tmp_path / "images",
            "uefi-sata",
            [mib, mib, mib],
            fill="zero",
            guest_id="rhel8_64Guest",
            firmware="efi",
            secure_boot=True,
            controllers=["scsi", "sata", "ide"],
            boot_disk=1,
            networks=["VM Network", "DC0_DVPG0"],
        )
        plain = create_lab_vm(info, tmp_path / "images", "bios-nvme", [mib], controllers=["nvme"])
        with VSphereClient(
            info.host, info.username, info.password, port=info.port, ca_file=info.ca_file
        ) as vc:
            found = {v["name"]: v for v in vc.discover()}
    vm = found["uefi-sata"]
    assert (vm["firmware"], vm["secure_boot"], vm["guest_os"]) == ("efi", True, "rhel8_64Guest")
    assert vm["guest_full_name"]
    disks = vm["disks"]
    assert [(d["controller_type"], d["controller_bus"], d["unit_number"]) for d in disks] == [
        ("scsi", 0, 0),
        ("sata", 0, 0),
        ("ide", 0, 0),
    ]
    assert sorted(disks, key=lambda d: int(d["key"]))[0]["controller_type"] == "scsi"
    assert vm["boot_order"] == [{"type": "disk", "key": disks[1]["key"]}]
    nics = vm["nics"]
    assert [n["network"] for n in nics] == ["VM Network", "DC0_DVPG0"]
    assert all(n["key"] and n["mac"] for n in nics) and nics[0]["mac"] != nics[1]["mac"]
    # the dict create_lab_vm returns is the discovered one
    assert {k: v for k, v in made.items() if k != "images"} == vm

    bios = found["bios-nvme"]
    assert (bios["firmware"], bios["secure_boot"], bios["boot_order"]) == ("bios", False, [])
    assert bios["disks"][0]["controller_type"] == "nvme"
    assert plain["disks"][0]["key"] == bios["disks"][0]["key"]
