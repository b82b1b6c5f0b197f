"""CloudStack integration of the OMA: the API client and attached-device lookup.

``CloudStackClient`` wraps the ``cs`` library (signed requests, async job polling) and turns
its failures into :class:`oma.errors.CloudStackError`; ``wait_for_device`` finds an attached
volume's block device by its serial in ``/dev/disk/by-id``.
"""

from __future__ import annotations

from .client import CloudStackClient, is_removed
from .devices import device_candidates, device_serial, find_device, wait_for_device
from .offerings import size_in_gib

__all__ = [
    "CloudStackClient",
    "device_candidates",
    "device_serial",
    "find_device",
    "is_removed",
    "size_in_gib",
    "wait_for_device",
]
