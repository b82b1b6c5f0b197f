"""Finding an attached volume's block device the way it works on KVM.

CloudStack sets each attached volume's disk serial to its uuid without hyphens, cut to 20
characters; udev then shows a virtio-blk disk as ``/dev/disk/by-id/virtio-<serial>`` (and a
virtio-scsi disk as ``scsi-0QEMU_QEMU_HARDDISK_<serial>``). We wait for that entry after the
attach and never guess from device order or CloudStack's ``deviceid``.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import DeviceNotFoundError

DEFAULT_BY_ID_DIR = "/dev/disk/by-id"
_PREFIXES = ("virtio-", "scsi-0QEMU_QEMU_HARDDISK_")


def device_serial(volume_id: str) -> str:
    """The disk serial CloudStack gives ``volume_id``: uuid without hyphens, first 20 chars."""
    return volume_id.replace("-", "")[:20]


def device_candidates(volume_id: str, by_id_dir: str | Path = DEFAULT_BY_ID_DIR) -> list[Path]:
    """The by-id names under which the volume may appear (virtio-blk first)."""
    serial = device_serial(volume_id)
    return [Path(by_id_dir) / f"{prefix}{serial}" for prefix in _PREFIXES]


def find_device(volume_id: str, by_id_dir: str | Path = DEFAULT_BY_ID_DIR) -> Path | None:
    """The resolved device of the volume if its by-id entry exists now, else None."""
    for candidate in device_candidates(volume_id, by_id_dir):
        if candidate.exists():  # follows the link: the target must exist too
            return candidate.resolve()
    return None


def wait_for_device(
    volume_id: str,
    by_id_dir: str | Path = DEFAULT_BY_ID_DIR,
    timeout: float = 60.0,
    interval: float = 0.1,
) -> Path:
    """Wait until the volume's by-id entry appears; return the resolved device path.

    Raises :class:`~oma.errors.DeviceNotFoundError` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = find_device(volume_id, by_id_dir)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            names = ", ".join(p.name for p in device_candidates(volume_id, by_id_dir))
            raise DeviceNotFoundError(
                f"volume {volume_id}: no {names} in {by_id_dir} after {timeout:g}s "
                "(is the volume attached to this appliance?)"
            )
        time.sleep(interval)
