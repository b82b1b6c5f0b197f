"""Reading /proc: is a PID a live qemu-nbd serving a given export (not a zombie, not reused)?"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None (gone, zombie, kernel thread, no permission)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
        if _state(pid) in (None, "Z", "X"):
            return None
    except OSError:
        return None
    if not raw:
        return None
    return [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ppid …": comm may contain spaces and parentheses
    return text[text.rfind(")") + 2 :].split()


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (guards against PID reuse)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def export_name_of(argv: list[str]) -> str | None:
    """The ``-x``/``--export-name`` value of a qemu-nbd argv (None when not qemu-nbd)."""
    if not argv or not os.path.basename(argv[0]).startswith("qemu-nbd"):
        return None
    for i, arg in enumerate(argv):
        if arg.startswith("--export-name="):
            return arg.split("=", 1)[1]
        if arg in ("-x", "--export-name") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def qemu_nbd_exports() -> dict[int, str]:
    """Every live qemu-nbd process with an export name: ``{pid: export name}``."""
    found: dict[int, str] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        argv = cmdline(int(entry.name))
        name = export_name_of(argv) if argv else None
        if name is not None:
            found[int(entry.name)] = name
    return found
