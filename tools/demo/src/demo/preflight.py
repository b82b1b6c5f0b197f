"""Check, before starting anything, that the tools and packages the demo needs exist."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

#: command → the Debian package that provides it
TOOLS = {
    "qemu-img": "qemu-utils",
    "qemu-nbd": "qemu-utils",
    "qemu-io": "qemu-utils",
    "go": "golang-go",
}
GOVMOMI_SOURCE = Path("/usr/share/gocode/src/github.com/vmware/govmomi/simulator")
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


def missing() -> list[str]:
    """One sentence per missing prerequisite (empty when everything is there)."""
    problems: list[str] = []
    apt = sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})
    if not GOVMOMI_SOURCE.is_dir():
        apt.append("golang-github-vmware-govmomi-dev")
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
