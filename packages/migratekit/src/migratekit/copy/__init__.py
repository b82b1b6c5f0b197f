"""Copy: extent planning, the pipelined engine, verification and the per-disk driver."""

from __future__ import annotations

from ._disk import CopyOptions, DiskResult, DiskSpec, copy_disk
from ._extents import load_extent_file, merge_ranges, parse_extent_list

__all__ = [
    "CopyOptions",
    "DiskResult",
    "DiskSpec",
    "copy_disk",
    "load_extent_file",
    "merge_ranges",
    "parse_extent_list",
]
