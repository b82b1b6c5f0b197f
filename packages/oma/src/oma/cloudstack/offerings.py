"""What CloudStack offerings let the OMA do: the one place that reads their rules.

* :func:`offering_details` — the ``details`` a deployVirtualMachine may carry for a service
  offering (only the values the offering leaves open).
* :func:`disk_offering_facts` / :func:`disk_offering_problems` — whether a disk offering can carry
  replicas of given sizes (customized or fixed size, the custom size limit), used by the client's
  ``create_volume``, the target test and the replication request check alike.

Every rule names the apache/cloudstack method it comes from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import OfferingMismatch

GIB = 1024**3

CUSTOM_DISK_MAX_SETTING = "custom.diskoffering.size.max"
"""Largest custom disk size in GB (``VolumeOrchestrationService.CustomDiskOfferingMaxSize``)."""
MAX_VOLUME_SETTING = "storage.max.volume.size"
"""Largest volume in GB (``VolumeOrchestrationService.MaxVolumeSize``)."""
DEFAULT_CUSTOM_DISK_MAX_GIB = 1024
"""CloudStack's default of ``custom.diskoffering.size.max``."""
DEFAULT_MAX_VOLUME_GIB = 2000
"""CloudStack's default of ``storage.max.volume.size``."""


def size_in_gib(size_bytes: int) -> int:
    """CloudStack's ``size`` (whole GB, really GiB) for a volume of at least ``size_bytes``."""
    if size_bytes <= 0:
        raise ValueError(f"size_bytes must be positive, got {size_bytes}")
    return max(1, math.ceil(size_bytes / GIB))


# ----- service offerings --------------------------------------------------------------------
_OPEN_VALUES = (
    # (details key, offering field, keyword of deploy_vm)
    ("cpuNumber", "cpunumber", "cpus"),
    ("cpuSpeed", "cpuspeed", "cpu_speed_mhz"),
    ("memory", "memory", "memory_mb"),
)


def offering_details(
    offering: Mapping[str, Any],
    *,
    cpus: int | None,
    memory_mb: int | None,
    cpu_speed_mhz: int | None,
) -> dict[str, int]:
    """The deployVirtualMachine ``details`` this service offering accepts.

    A fixed offering takes none. A custom one — one that leaves cpu number, cpu speed or memory
    without a value (``ServiceOfferingVO.isDynamic``) — needs exactly the values it leaves open
    and refuses the others ("… is not customizable"; ``UserVmManagerImpl
    .validateCustomParameters``). Raises :class:`OfferingMismatch` when an open value was not
    given.
    """
    if not any(not offering.get(field) for _, field, _ in _OPEN_VALUES):
        return {}
    given = {"cpus": cpus, "memory_mb": memory_mb, "cpu_speed_mhz": cpu_speed_mhz}
    details: dict[str, int] = {}
    for key, field, keyword in _OPEN_VALUES:
        if offering.get(field):  # set by the offering: CloudStack refuses a detail for it
            continue
        value = given[keyword]
        if value is None:
            raise OfferingMismatch(
                f"service offering {offering.get('name') or offering.get('id')} leaves {key} "
                f"open but no {keyword} was given",
                command="deployVirtualMachine",
            )
        details[key] = int(value)
    return details


# ----- disk offerings -------------------------------------------------------------------------
def disk_offering_facts(
    offering: Mapping[str, Any], *, max_gib: int | None, max_source: str | None
) -> dict[str, Any]:
    """The facts about a disk offering that decide which replicas it can carry.

    ``max_gib``: the largest custom size CloudStack accepts (the lower of
    ``custom.diskoffering.size.max`` and ``storage.max.volume.size``); ``max_source`` says where
    it came from (``cloudstack``, ``target`` setting or CloudStack's ``default``); None: unknown,
    left to CloudStack.
    ``disksize_gib`` is listDiskOfferings' ``disksize`` (GB).
    """
    return {
        "id": offering.get("id"),
        "name": offering.get("name"),
        "customized": bool(offering.get("iscustomized")),
        "disksize_gib": int(offering.get("disksize") or 0),
        "max_gib": None if max_gib is None else int(max_gib),
        "max_source": max_source,
    }


def describe_limit(facts: Mapping[str, Any]) -> str:
    """Where a custom size limit comes from, in words."""
    source = facts.get("max_source")
    if source == "target":
        return "the target's disk_size_max_gib"
    if source == "cloudstack":
        return f"CloudStack's {CUSTOM_DISK_MAX_SETTING}/{MAX_VOLUME_SETTING}"
    return (
        f"CloudStack's default {CUSTOM_DISK_MAX_SETTING}, assumed because the API key cannot "
        "read the setting"
    )


def disk_problem(facts: Mapping[str, Any], label: str, size_bytes: int) -> str | None:
    """Why the offering cannot carry a replica of a ``size_bytes`` disk, or None when it can.

    A customized offering takes a ``size`` of 1 … ``max_gib`` GB
    (``VolumeApiServiceImpl.validateCustomDiskOfferingSizeRange``, ``validateVolumeSizeInBytes``);
    a fixed one gives every volume its ``disksize`` and refuses a ``size``
    (``VolumeApiServiceImpl.allocVolume``: "This disk offering does not allow custom size").
    """
    need = size_in_gib(size_bytes)
    name = facts.get("name") or facts.get("id")
    if facts.get("customized"):
        limit = facts.get("max_gib")
        if limit is not None and need > int(limit):
            return (
                f"disk {label} has {size_bytes} bytes ({need} GB) but disk offering {name} "
                f"takes at most {limit} GB ({describe_limit(facts)})"
            )
        return None
    have = int(facts.get("disksize_gib") or 0)
    if have * GIB < size_bytes:
        return (
            f"disk {label} has {size_bytes} bytes ({need} GB) but disk offering {name} is not "
            f"customized and gives every volume {have} GB"
        )
    return None


def disk_offering_problems(facts: Mapping[str, Any], disks: Mapping[str, int]) -> list[str]:
    """Every disk (label → size in bytes) the offering cannot carry, in plain words."""
    return [p for label, size in disks.items() if (p := disk_problem(facts, label, size))]
