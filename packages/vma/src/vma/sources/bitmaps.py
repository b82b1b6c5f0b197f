"""QEMU persistent dirty bitmaps on a qcow2 image: the lab's change tracking.

A bitmap named ``gen-<N>`` is one generation; the change ID of a lab disk is the name of the
generation that started recording when its last sync began. All functions run ``qemu-img`` on
an image that no other process has open (qemu's image locking would refuse otherwise).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import SourceError

GENERATION = re.compile(r"^gen-(\d+)$")
DEFAULT_GRANULARITY = 65536


@dataclass(frozen=True)
class Bitmap:
    """A persistent bitmap as ``qemu-img info`` reports it."""

    name: str
    granularity: int
    flags: tuple[str, ...]

    @property
    def consistent(self) -> bool:
        """False when the bitmap was left in use by an unclean shutdown (unusable for good)."""
        return "in-use" not in self.flags and "inconsistent" not in self.flags

    @property
    def generation(self) -> int | None:
        """N for ``gen-N`` bitmaps, None for other names."""
        m = GENERATION.match(self.name)
        return int(m.group(1)) if m else None


def _qemu_img(*args: str) -> str:
    res = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise SourceError(f"qemu-img {' '.join(args[:2])} failed: {res.stderr.strip()}")
    return res.stdout


def list_bitmaps(image: Path) -> list[Bitmap]:
    """The image's persistent bitmaps."""
    info = json.loads(_qemu_img("info", "--output=json", "-f", "qcow2", str(image)))
    data = (info.get("format-specific") or {}).get("data") or {}
    return [
        Bitmap(b["name"], int(b.get("granularity", DEFAULT_GRANULARITY)), tuple(b.get("flags", [])))
        for b in data.get("bitmaps") or []
    ]


def virtual_size(image: Path) -> int:
    """The image's virtual size in bytes."""
    info = json.loads(_qemu_img("info", "--output=json", "-f", "qcow2", str(image)))
    return int(info["virtual-size"])


def add_bitmap(image: Path, name: str, granularity: int = DEFAULT_GRANULARITY) -> None:
    """Add a persistent, enabled bitmap: it records every write from now on."""
    _qemu_img("bitmap", "--add", "-g", str(granularity), str(image), name)


def remove_bitmap(image: Path, name: str) -> None:
    """Remove a persistent bitmap."""
    _qemu_img("bitmap", "--remove", str(image), name)


def next_generation(bitmaps: list[Bitmap]) -> str:
    """The name of the generation after the newest existing ``gen-N`` (``gen-0`` if none)."""
    gens = [b.generation for b in bitmaps if b.generation is not None]
    return f"gen-{max(gens) + 1}" if gens else "gen-0"


def prune_older(image: Path, keep: str) -> list[str]:
    """Remove every ``gen-N`` older than ``keep`` (and inconsistent ones); return removed names."""
    keep_n = int(GENERATION.match(keep).group(1)) if GENERATION.match(keep) else None
    removed = []
    for bitmap in list_bitmaps(image):
        gen = bitmap.generation
        if gen is None or bitmap.name == keep:
            continue
        if (keep_n is not None and gen < keep_n) or not bitmap.consistent:
            remove_bitmap(image, bitmap.name)
            removed.append(bitmap.name)
    return removed
