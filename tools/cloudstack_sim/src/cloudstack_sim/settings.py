"""Global settings: the real CloudStack configuration keys the simulator honours, plus ``sim.*``.

Each setting has a type, a real-like default and the apache/cloudstack place it comes from.
Values are set at start (``--setting name=value``, repeatable), changed at run time through
``PUT /sim/settings`` and persisted in the state like CloudStack keeps them in its database.
A bad name or value raises :class:`ValueError` whose text starts with the setting's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One configuration key: its type (``bool``/``int``/``float``/``str``), default, origin."""

    kind: type
    default: Any
    source: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None


SETTINGS: dict[str, Setting] = {
    # VolumeOrchestrationService.CustomDiskOfferingMinSize / CustomDiskOfferingMaxSize
    "custom.diskoffering.size.min": Setting(
        int, 1, "VolumeOrchestrationService.CustomDiskOfferingMinSize", minimum=1
    ),
    "custom.diskoffering.size.max": Setting(
        int, 1024, "VolumeOrchestrationService.CustomDiskOfferingMaxSize", minimum=1
    ),
    # VolumeOrchestrationService.MaxVolumeSize (GB)
    "storage.max.volume.size": Setting(
        int, 2000, "VolumeOrchestrationService.MaxVolumeSize", minimum=1
    ),
    # UserVmManager.AllowUserExpungeRecoverVm
    "allow.user.expunge.recover.vm": Setting(
        bool, False, "UserVmManager.AllowUserExpungeRecoverVm"
    ),
    # QueryService.AllowUserViewDestroyedVM
    "allow.user.view.destroyed.vm": Setting(bool, False, "QueryService.AllowUserViewDestroyedVM"),
    # BaseListCmd.getPageSize: the largest page size of list commands (-1 = unlimited)
    "default.page.size": Setting(int, 500, "BaseListCmd.getPageSize", minimum=-1),
    # BackupManager.BackupFrameworkEnabled
    "backup.framework.enabled": Setting(bool, False, "BackupManager.BackupFrameworkEnabled"),
    # BackupManager.BackupEnableAttachDetachVolumes
    "backup.enable.attach.detach.of.volumes": Setting(
        bool, False, "BackupManager.BackupEnableAttachDetachVolumes"
    ),
    # VMSnapshotManager.VMSnapshotMax
    "vmsnapshot.max": Setting(int, 10, "VMSnapshotManagerImpl (vmsnapshot.max)", minimum=1),
    # SnapshotManagerImpl.hostSupportsSnapsthotForVolume reads "kvm.snapshot.enabled" (false
    # unless an operator set it)
    "kvm.snapshot.enabled": Setting(
        bool, False, "SnapshotManagerImpl.hostSupportsSnapsthotForVolume"
    ),
    # simulator-only: the account type behind the API key (CloudStack's Account.Type ADMIN/NORMAL)
    "sim.account.type": Setting(str, "admin", "simulator", choices=("admin", "user")),
    # simulator-only: seconds an attachVolume job stays pending (the real attach may first move
    # the volume to the VM's cluster: VolumeApiServiceImpl.orchestrateAttachVolumeToVM → moveVolume)
    "sim.attach.delay": Setting(float, 0.0, "simulator", minimum=0),
    # simulator-only: hypervisor_capabilities.max_data_volumes_limit of the fixture's KVM hosts
    # (32 since schema-452to460.sql)
    "sim.kvm.max.data.volumes": Setting(int, 32, "hypervisor_capabilities", minimum=1),
}

_TRUE = {"true": True, "false": False}


def coerce(name: str, value: Any) -> Any:
    """Check and convert ``value`` (JSON value or command-line text) for setting ``name``."""
    spec = SETTINGS.get(name)
    if spec is None:
        raise ValueError(f"{name}: unknown setting")
    try:
        if spec.kind is bool:
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, str) and value.lower() in _TRUE:
                out = _TRUE[value.lower()]
            else:
                raise ValueError
        elif spec.kind is int:
            if isinstance(value, bool | float):
                raise ValueError
            out = int(value)
        elif spec.kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            out = value.lower()
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {spec.kind.__name__} expected, got {value!r}") from None
    if spec.choices and out not in spec.choices:
        raise ValueError(f"{name}: one of {', '.join(spec.choices)} expected, got {value!r}")
    if spec.minimum is not None and out < spec.minimum:
        raise ValueError(f"{name}: at least {spec.minimum:g} expected, got {value!r}")
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """``name=value`` from the command line → ``(name, typed value)``."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text}: expected name=value")
    name = name.strip()
    return name, coerce(name, value.strip())


def defaults() -> dict[str, Any]:
    """Every setting at its default."""
    return {name: spec.default for name, spec in SETTINGS.items()}
