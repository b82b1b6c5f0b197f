"""wait_for_device: by-id lookup by serial, never by device order."""

from __future__ import annotations

import threading

import pytest

from oma.cloudstack import device_serial, find_device, wait_for_device
from oma.errors import DeviceNotFoundError

VOL = "fe1ada16-8c2b-4a5e-9d41-0123456789ab"


def test_serial_is_uuid_without_hyphens_cut_to_20() -> None:
    assert device_serial(VOL) == "fe1ada168c2b4a5e9d41"


def test_resolves_symlink(tmp_path) -> None:
    target = tmp_path / "vdc"
    target.write_bytes(b"")
    (tmp_path / f"virtio-{device_serial(VOL)}").symlink_to(target)
    (tmp_path / "virtio-other").symlink_to(target)
    assert wait_for_device(VOL, tmp_path, timeout=1) == target.resolve()


def test_scsi_name_is_found(tmp_path) -> None:
    target = tmp_path / "sdb"
    target.write_bytes(b"")
    (tmp_path / f"scsi-0QEMU_QEMU_HARDDISK_{device_serial(VOL)}").symlink_to(target)
    assert find_device(VOL, tmp_path) == target.resolve()


def test_waits_for_late_device(tmp_path) -> None:
    target = tmp_path / "vdd"
    target.write_bytes(b"")
    timer = threading.Timer(
        0.3, (tmp_path / f"virtio-{device_serial(VOL)}").symlink_to, args=(target,)
    )
    timer.start()
    try:
        assert wait_for_device(VOL, tmp_path, timeout=10, interval=0.02) == target.resolve()
    finally:
        timer.join()


def test_missing_device_raises(tmp_path) -> None:
    # a dangling link (target gone) does not count as the device
    (tmp_path / f"virtio-{device_serial(VOL)}").symlink_to(tmp_path / "gone")
    with pytest.raises(DeviceNotFoundError) as exc:
        wait_for_device(VOL, tmp_path, timeout=0.2, interval=0.05)
    assert VOL in str(exc.value) and f"virtio-{device_serial(VOL)}" in str(exc.value)
