"""Progress: per-disk trackers, the publishing hub and its sinks (HTTP, terminal).

The HTTP sink imports ``migration_common``'s HTTP client only when one is created.
"""

from __future__ import annotations

from ._http import HttpProgressSink
from ._terminal import BarSink, PlainSink
from ._tracker import DiskTracker, ProgressHub, ProgressSink
from ._update import DiskUpdate

__all__ = [
    "BarSink",
    "DiskTracker",
    "DiskUpdate",
    "HttpProgressSink",
    "PlainSink",
    "ProgressHub",
    "ProgressSink",
]
