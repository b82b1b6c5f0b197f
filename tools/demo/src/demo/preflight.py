"""Check, before starting anything, that the tools and packages the demo needs exist."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

#: command → the Debian package that provides it
TOOLS = {
    "qemu-img": "qemu-utils",
    "qemu-nbd": "qemu-utils",
    "qemu-io": "qemu-utils",
    "go": "golang-go",
}
GOVMOMI_SOURCE = Path("/usr/share/gocode/src/github.com/vmware/govmomi/simulator")
#: what --source vsphere needs besides: nbdkit and its Python plugin (the VDDK stand-in)
VSPHERE_TOOLS = {"nbdkit": "nbdkit"}
NBDKIT_PYTHON = "nbdkit-plugin-python"
#: import name → what installs it
MODULES = {
    "labtest": "tools/labtest",
    "cloudstack_sim": "tools/cloudstack_sim",
    "oma": "packages/oma",
    "vma": "packages/vma",
    "vma_api_server": "packages/vma_api_server",
    "migratekit": "packages/migratekit",
    "migration_common": "packages/common",
}


def _has_nbdkit_python() -> bool:
    """True when nbdkit can load its Python plugin."""
    if shutil.which("nbdkit") is None:
        return False
    res = subprocess.run(
        ["nbdkit", "--dump-plugin", "python"], capture_output=True, text=True, check=False
    )
    return res.returncode == 0


def missing(source: str = "lab") -> list[str]:
    """One sentence per missing prerequisite (empty when everything is there)."""
    problems: list[str] = []
    tools = {**TOOLS, **(VSPHERE_TOOLS if source == "vsphere" else {})}
    apt = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if not GOVMOMI_SOURCE.is_dir():
        apt.append("golang-github-vmware-govmomi-dev")
    if source == "vsphere" and not _has_nbdkit_python():
        apt.append(NBDKIT_PYTHON)
    if apt:
        problems.append(
            "missing system packages: "
            + " ".join(apt)
            + f" (run: apt-get install -y {' '.join(apt)})"
        )
    mods = [path for name, path in MODULES.items() if importlib.util.find_spec(name) is None]
    if mods:
        problems.append(
            "missing Python packages: "
            + " ".join(mods)
            + " (run the demo through scripts/nox -s demo, or pip install -e them)"
        )
    return problems
