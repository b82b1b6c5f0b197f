"""``python -m demo add-vm NAME --workdir DIR [--disks 64M,32M]``: one more lab VM in a kept lab.

A ``--keep`` run leaves ``vcenter.json`` (0600: the simulator's address and login) in its
working directory; the new VM is created in that vcsim like the demo's own (one NIC on
"VM Network", a qcow2 image per disk in ``<workdir>/images``, which the VMA reads, powered on).
The OMA then adds it through discovery: ``oma discover --add NAME``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .api import DemoError

VCENTER_FILE = "vcenter.json"
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_sizes(text: str) -> list[int]:
    """``64M,32M`` → disk sizes in bytes (K, M, G binary units; at least 1 MiB each)."""
    sizes = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", part, re.IGNORECASE)
        if not m:
            raise DemoError(f"--disks: {part.strip()!r} is not a size like 64M or 1G")
        size = int(m.group(1)) * UNITS[m.group(2).upper()]
        if size < 1 << 20:
            raise DemoError(f"--disks: {part.strip()!r} is below 1 MiB")
        sizes.append(size)
    return sizes


def record_vcenter(workdir: Path, vc: Any) -> Path:
    """Write the kept vcsim's address and login for ``add-vm`` (mode 0600)."""
    import os

    path = workdir / VCENTER_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {
                "host": vc.host,
                "port": vc.port,
                "url": vc.url,
                "username": vc.username,
                "password": vc.password,
                "pid": vc.pid,
            },
            fh,
        )
    return path


def add_vm(workdir: Path, name: str, sizes: list[int], *, seed: int = 11) -> dict[str, Any]:
    """Create lab VM ``name`` in the kept lab of ``workdir``; the VM (with its images)."""
    from labtest.vcsim import VcsimInfo

    from .stack import Lab, create_vm

    path = workdir / VCENTER_FILE
    if not path.exists():
        raise DemoError(f"no kept lab in {workdir} (run `python -m demo --keep --workdir DIR`)")
    login = json.loads(path.read_text())
    lab = Lab(workdir=workdir, vc=VcsimInfo(**login))
    return create_vm(lab, name, sizes, seed)
