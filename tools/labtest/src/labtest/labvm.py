"""Lab VMs: a vcsim VM plus one local qcow2 image per disk, for tests and the demo.

The VMA's lab source (``vma.sources.lab``) serves these images with qemu-nbd and tracks changes
with QEMU persistent dirty bitmaps named ``gen-<N>``. Layout::

    <lab_dir>/<vm_id>/<disk_key>.qcow2      vm_id = the VM's config.uuid

:func:`create_lab_vm` creates the VM in vcsim (the VMA's own ConfigSpec,
``vma.vmware.provisioning``, optionally with EFI firmware and secure boot, disks on
IDE/SATA/NVMe controllers, a boot order and NICs), then an image per disk key with
deterministic content and the initial bitmap ``gen-0``. :func:`write_lab_disk` changes a disk
between syncs (with qemu-io, so the enabled bitmaps record the write), and
:func:`lab_disk_sha256` hashes a disk's full virtual contents for byte-equality checks.

Every write to a lab disk, its creation included, is also appended to the disk's write journal
``<lab_dir>/<vm_id>/<disk_key>.journal`` (one ``"<offset> <length>"`` line per write): the lab's
vcsim (``VCSIM_LAB_DIR``, tools/vcsim/README.md) answers QueryChangedDiskAreas from it, and the
VDDK stand-in (tools/vddk) checks a snapshot's disk was not written since.
:func:`reset_lab_cbt` resets a VM's changed block tracking (off, then on).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .nbd import add_bitmap, qemu_img, qemu_io

CHUNK = 256 * 1024

#: The lab's stand-in for nbdkit's VDDK plugin (tools/vddk).
VDDK_STANDIN = Path(__file__).resolve().parents[3] / "vddk"


def vsphere_source_env(lab_dir: str | os.PathLike[str]) -> dict[str, str]:
    """VMA settings for reading lab VMs through the VMA's vSphere source: nbdkit with the VDDK
    stand-in (``VMA_VDDK_PLUGIN``), which finds the disks' images under ``lab_dir``. Give the
    VMA no ``VMA_LAB_DIR`` then, and start vcsim with ``VCSIM_LAB_DIR`` = ``lab_dir`` so its
    QueryChangedDiskAreas reports the lab's writes."""
    return {
        "VMA_VDDK_PLUGIN": f"python {VDDK_STANDIN / 'plugin.py'}",
        "VMA_VDDK_LIBDIR": str(VDDK_STANDIN),
        "VDDK_LAB_DIR": str(lab_dir),
    }


def lab_image(lab_dir: str | os.PathLike[str], vm_id: str, disk_key: str) -> Path:
    """Path of a lab disk image."""
    return Path(lab_dir) / vm_id / f"{disk_key}.qcow2"


def journal_path(image: str | os.PathLike[str]) -> Path:
    """The write journal of a lab disk image (``<disk_key>.journal`` next to it)."""
    return Path(image).with_suffix(".journal")


def _journal(image: Path, extents: list[tuple[int, int]]) -> None:
    """Append one record per write to the disk's journal (flushed before returning)."""
    with open(journal_path(image), "a") as fh:
        fh.writelines(f"{offset} {length}\n" for offset, length in extents)
        fh.flush()
        os.fsync(fh.fileno())


def _fill_raw(path: Path, size: int, fill: str, seed: int) -> list[tuple[int, int]]:
    """Write a sparse raw file for ``fill``; return the data extents written (merged)."""
    rng = random.Random(seed)
    extents: list[tuple[int, int]] = []
    with open(path, "wb") as fh:
        fh.truncate(size)
        if fill in ("zero", "empty"):
            return extents
        for offset in range(0, size, CHUNK):
            length = min(CHUNK, size - offset)
            if fill == "random" or rng.random() < 0.45:
                fh.seek(offset)
                fh.write(rng.randbytes(length))
                if extents and sum(extents[-1]) == offset:
                    extents[-1] = (extents[-1][0], extents[-1][1] + length)
                else:
                    extents.append((offset, length))
    return extents


def create_lab_disk(
    path: str | os.PathLike[str], size: int, *, fill: str = "random-with-holes", seed: int = 0
) -> Path:
    """Create one qcow2 lab image of ``size`` bytes with content and bitmap ``gen-0``.

    ``fill``: ``random-with-holes`` (~45 % of 256 KiB chunks random, the rest unallocated),
    ``random`` (dense) or ``zero`` (empty image). Same seed → same bytes. The data written is
    the first record(s) of the disk's new write journal.
    """
    if fill not in ("random-with-holes", "random", "zero", "empty"):
        raise ValueError(f"unknown fill {fill!r}")
    image = Path(path)
    image.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=image.parent) as tmp:
        raw = Path(tmp) / "fill.raw"
        extents = _fill_raw(raw, size, fill, seed)
        qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    add_bitmap(image, "gen-0")
    journal_path(image).unlink(missing_ok=True)
    _journal(image, extents)
    return image


CONTROLLERS = ("scsi", "sata", "ide", "nvme")
"""Disk controller types a lab VM's disks can sit on (``controllers`` of create_lab_vm)."""


@contextlib.contextmanager
def _vsphere(vcsim_info: Any) -> Iterator[Any]:
    """A pyVmomi ServiceInstance on the simulator (TLS verified against its certificate)."""
    from pyVim.connect import Disconnect, SmartConnect

    ca_file = getattr(vcsim_info, "ca_file", "") or None
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
    si = SmartConnect(
        host=vcsim_info.host,
        port=vcsim_info.port,
        user=vcsim_info.username,
        pwd=vcsim_info.password,
        sslContext=ctx,
        disableSslCertValidation=ctx is None,
    )
    try:
        yield si
    finally:
        Disconnect(si)


def _place_disks(spec: Any, controllers: list[str]) -> None:
    """Move the spec's disks (all on its PVSCSI controller) to the given controller types: one
    new AHCI (SATA) or NVMe controller on bus 0 when needed, IDE disks on the VM's built-in
    IDE controller 200 (master/slave). SCSI disks keep their units (7 is the controller's)."""
    from pyVmomi import vim

    dev, add = vim.vm.device, vim.vm.device.VirtualDeviceSpec.Operation.add
    disks = [c.device for c in spec.deviceChange if isinstance(c.device, dev.VirtualDisk)]
    new = {"sata": (dev.VirtualAHCIController, -300), "nvme": (dev.VirtualNVMEController, -400)}
    units: dict[str, int] = {}
    for disk, kind in zip(disks, controllers, strict=True):
        if kind == "scsi":
            continue
        if kind == "ide":
            disk.controllerKey = 200
        else:
            cls, key = new[kind]
            if kind not in units:
                spec.deviceChange.append(
                    dev.VirtualDeviceSpec(operation=add, device=cls(key=key, busNumber=0))
                )
            disk.controllerKey = key
        disk.unitNumber = units.get(kind, 0)
        units[kind] = disk.unitNumber + 1
    if units.get("ide", 0) > 2:
        raise ValueError("at most 2 disks fit on the IDE controller")


def create_lab_vm(
    vcsim_info: Any,
    lab_dir: str | os.PathLike[str],
    name: str,
    disk_sizes: list[int],
    *,
    fill: str = "random-with-holes",
    seed: int = 0,
    guest_id: str = "otherLinux64Guest",
    firmware: str = "bios",
    secure_boot: bool = False,
    controllers: list[str] | None = None,
    boot_disk: int | None = None,
    networks: list[str] | None = None,
) -> dict[str, Any]:
    """Create VM ``name`` in vcsim with ``disk_sizes`` and a qcow2 image per disk key.

    ``firmware`` ``bios``/``efi`` (``secure_boot`` only with ``efi``); ``controllers`` one type
    per disk (:data:`CONTROLLERS`, default all ``scsi``; vSphere numbers disk keys in creation
    order, so a SATA disk after a SCSI one has the higher key); ``boot_disk`` the index of the
    disk put first in the VM's boot order (``config.bootOptions.bootOrder``, set by a reconfigure
    once the real device keys exist); ``networks`` one vmxnet3 NIC per network name.
    Returns the VMA's VM dict (``vma.vmware.inventory``) plus ``"images": {disk_key: path}``.
    """
    from pyVmomi import vim

    from vma.vmware import inventory, provisioning
    from vma.vmware.tasks import wait_for_task

    kinds = list(controllers or ["scsi"] * len(disk_sizes))
    if len(kinds) != len(disk_sizes) or any(k not in CONTROLLERS for k in kinds):
        raise ValueError(f"controllers must name one of {CONTROLLERS} per disk")
    if secure_boot and firmware != "efi":
        raise ValueError("secure_boot needs firmware 'efi'")
    with _vsphere(vcsim_info) as si:
        names = inventory.read_names(si)
        placement = provisioning.find_placement(si, names.datacenters[sorted(names.datacenters)[0]])
        spec = provisioning.vm_config_spec(
            si,
            placement,
            name,
            disks_bytes=list(disk_sizes),
            cpus=2,
            memory_mb=2048,
            guest_id=guest_id,
            firmware=firmware,
            networks=list(networks or []),
        )
        _place_disks(spec, kinds)
        if secure_boot:
            spec.bootOptions = vim.vm.BootOptions(efiSecureBootEnabled=True)
        task = placement.folder.CreateVM_Task(config=spec, pool=placement.pool)
        ref = wait_for_task(si, task, action=f"create VM {name!r}")
        if boot_disk is not None:
            key = int(inventory.read_vm(si, ref)["disks"][boot_disk]["key"])
            options = vim.vm.BootOptions(
                efiSecureBootEnabled=secure_boot,
                bootOrder=[vim.vm.BootOptions.BootableDiskDevice(deviceKey=key)],
            )
            task = ref.ReconfigVM_Task(spec=vim.vm.ConfigSpec(bootOptions=options))
            wait_for_task(si, task, action=f"set the boot order of {name!r}")
        vm = inventory.read_vm(si, ref)
    images = {}
    for index, disk in enumerate(vm["disks"]):
        key = str(disk["key"])
        images[key] = str(
            create_lab_disk(
                lab_image(lab_dir, vm["id"], key),
                int(disk["capacity_bytes"]),
                fill=fill,
                seed=seed * 1000 + index,
            )
        )
    return {**vm, "images": images}


def write_lab_disk(
    lab_dir: str | os.PathLike[str],
    vm_id: str,
    disk_key: str,
    offset: int,
    data_or_pattern: bytes | tuple[int, int],
) -> int:
    """Write to a lab disk between syncs; return the number of bytes written.

    ``data_or_pattern`` is the bytes to write, or ``(pattern, length)`` to write ``length``
    bytes of one byte value (pattern 0 writes zeroes with qemu-io ``write -z``). The image must
    not be open (no sync running), as on a real VM the write goes through the dirty bitmaps.
    The write is appended to the disk's journal (what the lab's vcsim reports as changed).
    """
    image = lab_image(lab_dir, vm_id, disk_key)
    if isinstance(data_or_pattern, tuple):
        pattern, length = data_or_pattern
        command = (
            f"write -q -z {offset} {length}"
            if pattern == 0
            else f"write -q -P {pattern} {offset} {length}"
        )
        qemu_io(image, command)
        _journal(image, [(offset, length)])
        return length
    data = bytes(data_or_pattern)
    with tempfile.NamedTemporaryFile(dir=image.parent, suffix=".bin") as fh:
        fh.write(data)
        fh.flush()
        qemu_io(image, f"write -q -s {fh.name} {offset} {len(data)}")
    _journal(image, [(offset, len(data))])
    return len(data)


def reset_lab_cbt(vcsim_info: Any, vm_id: str) -> None:
    """Reset a VM's changed block tracking as an admin would: switch it off, then on again.

    vCenter then starts a new tracking generation: change IDs from before the reset are
    refused (FileFault) by QueryChangedDiskAreas, so the next sync must copy in full."""
    from pyVmomi import vim

    from vma.vmware.tasks import wait_for_task

    with _vsphere(vcsim_info) as si:
        vm = si.content.searchIndex.FindByUuid(uuid=vm_id, vmSearch=True, instanceUuid=False)
        if vm is None:
            raise LookupError(f"VM {vm_id} not found in vcsim")
        for enabled in (False, True):
            spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
            wait_for_task(si, vm.ReconfigVM_Task(spec=spec), action=f"CBT enabled={enabled}")


def lab_disk_sha256(
    path: str | os.PathLike[str], fmt: str = "qcow2", size: int | None = None
) -> str:
    """sha256 of an image's virtual contents (first ``size`` bytes when given)."""
    src = Path(path)
    with tempfile.TemporaryDirectory(dir=src.parent) as tmp:
        raw = Path(tmp) / "contents.raw"
        qemu_img("convert", "-U", "-q", "-f", fmt, "-O", "raw", str(src), str(raw))
        digest = hashlib.sha256()
        remaining = raw.stat().st_size if size is None else size
        with open(raw, "rb") as fh:
            while remaining > 0:
                block = fh.read(min(1 << 20, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
    return digest.hexdigest()
