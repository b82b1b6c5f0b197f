"""Lab VMs: a vcsim VM plus one local qcow2 image per disk, for tests and the demo.

The VMA's lab source (``vma.sources.lab``) serves these images with qemu-nbd and tracks changes
with QEMU persistent dirty bitmaps named ``gen-<N>``. Layout::

    <lab_dir>/<vm_id>/<disk_key>.qcow2      vm_id = the VM's config.uuid

:func:`create_lab_vm` creates the VM in vcsim (``VSphereClient.create_vm``), then an image per
disk key with deterministic content and the initial bitmap ``gen-0``. :func:`write_lab_disk`
changes a disk between syncs (with qemu-io, so the enabled bitmaps record the write), and
:func:`lab_disk_sha256` hashes a disk's full virtual contents for byte-equality checks.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from .nbd import add_bitmap, qemu_img, qemu_io

CHUNK = 256 * 1024


def lab_image(lab_dir: str | os.PathLike[str], vm_id: str, disk_key: str) -> Path:
    """Path of a lab disk image."""
    return Path(lab_dir) / vm_id / f"{disk_key}.qcow2"


def _fill_raw(path: Path, size: int, fill: str, seed: int) -> int:
    """Write a sparse raw file for ``fill``; return the number of data bytes written."""
    rng = random.Random(seed)
    written = 0
    with open(path, "wb") as fh:
        fh.truncate(size)
        if fill in ("zero", "empty"):
            return 0
        for offset in range(0, size, CHUNK):
            length = min(CHUNK, size - offset)
            if fill == "random" or rng.random() < 0.45:
                fh.seek(offset)
                fh.write(rng.randbytes(length))
                written += length
    return written


def create_lab_disk(
    path: str | os.PathLike[str], size: int, *, fill: str = "random-with-holes", seed: int = 0
) -> Path:
    """Create one qcow2 lab image of ``size`` bytes with content and bitmap ``gen-0``.

    ``fill``: ``random-with-holes`` (~45 % of 256 KiB chunks random, the rest unallocated),
    ``random`` (dense) or ``zero`` (empty image). Same seed → same bytes.
    """
    if fill not in ("random-with-holes", "random", "zero", "empty"):
        raise ValueError(f"unknown fill {fill!r}")
    image = Path(path)
    image.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=image.parent) as tmp:
        raw = Path(tmp) / "fill.raw"
        _fill_raw(raw, size, fill, seed)
        qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    add_bitmap(image, "gen-0")
    return image


def create_lab_vm(
    vcsim_info: Any,
    lab_dir: str | os.PathLike[str],
    name: str,
    disk_sizes: list[int],
    *,
    fill: str = "random-with-holes",
    seed: int = 0,
) -> dict[str, Any]:
    """Create VM ``name`` in vcsim with ``disk_sizes`` and a qcow2 image per disk key.

    Returns the VM dict of ``VSphereClient.create_vm`` plus ``"images": {disk_key: path}``.
    """
    from vma.vmware import VSphereClient

    with VSphereClient(
        vcsim_info.host,
        vcsim_info.username,
        vcsim_info.password,
        port=vcsim_info.port,
        insecure=True,
    ) as vc:
        vm = vc.create_vm(name, disks_bytes=list(disk_sizes))
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
        return length
    data = bytes(data_or_pattern)
    with tempfile.NamedTemporaryFile(dir=image.parent, suffix=".bin") as fh:
        fh.write(data)
        fh.flush()
        qemu_io(image, f"write -q -s {fh.name} {offset} {len(data)}")
    return len(data)


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
