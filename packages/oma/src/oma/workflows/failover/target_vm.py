"""What the failed-over VM looks like, from the source VM's discovery ``spec``: pure functions.

- :func:`vm_name_for` / :func:`is_host_name` — CloudStack's host name rule.
- :func:`boot_firmware` — ``boottype``/``bootmode`` from the source's firmware and secure boot.
- :func:`boot_disk` — the boot disk: requested, else the source's boot order, else the disk
  on the first controller a BIOS/UEFI tries.
- :func:`nic_plan` — one NIC per source NIC (source order) on its mapped network, with its MAC.
- :func:`choose_template` — the requested template, else the one whose OS type matches the
  source's guest OS.

Each refusal is a :class:`TargetInvalid` naming the request field it concerns, so the API
answers it as a 400 at request time and the ``validate`` step fails with the same text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

HOST_NAME_MAX = 63


class TargetInvalid(ValueError):
    """The target VM cannot be built as requested; ``field`` is the request field concerned."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- host name ---------------------------------------------------------------------------------


def is_host_name(name: str) -> bool:
    """CloudStack's host name rule for a VM ``name`` (NetUtils.verifyDomainNameLabel with
    isHostName=true, called by UserVmManagerImpl.checkNameForRFCCompliance): 1 to 63 ASCII
    letters, digits and hyphens, not starting or ending with a hyphen, not starting with a digit.
    """
    return (
        1 <= len(name) <= HOST_NAME_MAX
        and re.fullmatch(r"[A-Za-z0-9-]+", name) is not None
        and not name.endswith("-")
        and re.match(r"[0-9-]", name) is None
    )


def vm_name_for(name: str) -> str:
    """A valid CloudStack host name (:func:`is_host_name`) derived from a VMware VM name.

    Accents are dropped (``café`` → ``cafe``), every run of other characters becomes one
    hyphen, leading and trailing hyphens go, a name that would start with a digit (or be
    empty) gets the prefix ``vm-``, and the result is cut to 63 characters. Case is kept.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    clean = re.sub(r"[^A-Za-z0-9]+", "-", ascii_name).strip("-")
    if not clean or not clean[0].isalpha():
        clean = f"vm-{clean}"
    return clean[:HOST_NAME_MAX].rstrip("-")


# -- firmware ----------------------------------------------------------------------------------


def boot_firmware(spec: Mapping[str, Any]) -> tuple[str, str]:
    """``(boottype, bootmode)`` for deployVirtualMachine: a vSphere ``efi`` VM boots ``UEFI``,
    ``SECURE`` when it had secure boot, else ``LEGACY``; anything else is ``BIOS``/``LEGACY``
    (CloudStack's ApiConstants.BootType / BootMode values)."""
    if str(spec.get("firmware") or "bios").lower() == "efi":
        return "UEFI", "SECURE" if spec.get("secure_boot") else "LEGACY"
    return "BIOS", "LEGACY"


# -- boot disk ---------------------------------------------------------------------------------

CONTROLLER_ORDER = ("ide", "sata", "nvme", "scsi")
"""The order in which the firmware tries disk controllers when the VM has no boot order:
IDE first (a PC BIOS's primary channel), then the AHCI (SATA) ports, then NVMe, then SCSI
option ROMs; within a type by bus number, then unit number. A disk whose controller type is
unknown comes last."""


def _controller_rank(disk: Mapping[str, Any]) -> tuple[int, int, int]:
    kind = str(disk.get("controller_type") or "").lower()
    rank = CONTROLLER_ORDER.index(kind) if kind in CONTROLLER_ORDER else len(CONTROLLER_ORDER)
    bus = disk.get("controller_bus")
    unit = disk.get("unit_number")
    unknown = 1 << 16
    return (
        rank,
        bus if isinstance(bus, int) else unknown,
        unit if isinstance(unit, int) else unknown,
    )


def boot_disk(
    keys: Iterable[str], spec: Mapping[str, Any], requested: str | None = None
) -> tuple[str, str]:
    """``(disk key, why)`` of the disk that becomes the target's root volume.

    ``keys`` are the context's disk keys in disk-key order. In order: the ``requested`` key
    (must be one of them); the first disk entry of the source's boot order
    (``spec["boot_order"]``, vSphere ``config.bootOptions.bootOrder``); the disk on the first
    controller the firmware tries (:data:`CONTROLLER_ORDER`, from ``spec["disks"]``); the
    first key only when discovery reported no controller types at all.
    """
    ordered = [str(k) for k in keys]
    if not ordered:
        raise TargetInvalid("boot_disk_key", "the VM context has no disks")
    if requested is not None:
        if requested not in ordered:
            raise TargetInvalid(
                "boot_disk_key",
                f"boot_disk_key {requested} is not a disk of this VM ({', '.join(ordered)})",
            )
        return requested, "requested"
    for entry in spec.get("boot_order") or []:
        is_disk = isinstance(entry, Mapping) and entry.get("type") == "disk"
        if is_disk and str(entry.get("key")) in ordered:
            return str(entry["key"]), "boot order"
    disks = {
        str(d.get("key")): d
        for d in spec.get("disks") or []
        if isinstance(d, Mapping) and str(d.get("key")) in ordered
    }
    if any(d.get("controller_type") for d in disks.values()):
        # min() keeps the first of equals: ties go to the lower disk key
        return min(disks, key=lambda k: (_controller_rank(disks[k]), ordered.index(k))), (
            "controller order"
        )
    return ordered[0], "first disk key"


# -- NICs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NicPlan:
    """One NIC of the target VM: the source NIC it replaces, its network and MAC."""

    label: str
    source_network: str | None
    network_id: str
    mac: str | None


def source_nics(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The source VM's NICs from its spec, in source order."""
    return [n for n in spec.get("nics") or spec.get("networks") or [] if isinstance(n, dict)]


def nic_plan(
    spec: Mapping[str, Any], mappings: Mapping[str, str], keep_macs: bool = True
) -> list[NicPlan]:
    """One target NIC per source NIC, in source NIC order, each on its mapped network and
    (``keep_macs``) with its MAC. A spec without NICs gets one NIC per mapped network.

    Refused: a source network missing from ``mappings``, and two source NICs that land on
    one CloudStack network — deployVirtualMachine gives a VM one NIC per network
    (DeployVMCmd.getIpToNetworkMap keys ``iptonetworklist`` by network id, so a second entry
    for the same network replaces the first, MAC included).
    """
    nics = source_nics(spec)
    if not nics:
        return [NicPlan(f"network {n}", None, n, None) for n in dict.fromkeys(mappings.values())]
    plan: list[NicPlan] = []
    for index, nic in enumerate(nics):
        source = nic.get("network") or nic.get("network_name")
        mac = nic.get("mac") or nic.get("mac_address")
        # labels need not be unique (vcsim names every NIC alike): number them, add the MAC
        label = f"NIC {index + 1}" + (f" {nic['label']!r}" if nic.get("label") else "")
        label += f" MAC {mac}" if mac else ""
        if source not in mappings:
            raise TargetInvalid(
                "network_mappings",
                f"source network {source!r} of {label} is not in network_mappings",
            )
        kept = str(mac).lower() if keep_macs and mac else None
        plan.append(NicPlan(label, source, mappings[source], kept))
    seen: dict[str, NicPlan] = {}
    for nic in plan:
        first = seen.setdefault(nic.network_id, nic)
        if first is not nic:
            raise TargetInvalid(
                "network_mappings",
                f"{first.label} (source network {first.source_network!r}) and {nic.label} "
                f"(source network {nic.source_network!r}) are both mapped to network "
                f"{nic.network_id}; CloudStack gives a VM one NIC per network: map them to "
                "different networks",
            )
    return plan


# -- template ----------------------------------------------------------------------------------

GUEST_OS_TYPES: tuple[tuple[str, str], ...] = (
    # (VMware guestId pattern, CloudStack OS type description prefix)
    (r"rhel(\d+)(_64)?Guest", "Red Hat Enterprise Linux {0}"),
    (r"centos(\d+)(_64)?Guest", "CentOS {0}"),
    (r"centos(_64)?Guest", "CentOS"),
    (r"oracleLinux(\d+)(_64)?Guest", "Oracle Linux {0}"),
    (r"rockylinux_64Guest", "Rocky Linux"),
    (r"almalinux_64Guest", "AlmaLinux"),
    (r"debian(\d+)(_64)?Guest", "Debian GNU/Linux {0}"),
    (r"ubuntu(64)?Guest", "Ubuntu"),
    (r"sles(\d+)(_64)?Guest", "SUSE Linux Enterprise Server {0}"),
    (r"windows2019srvNext_64Guest", "Windows Server 2022"),
    (r"windows2019srv_64Guest", "Windows Server 2019"),
    (r"windows9Server64Guest", "Windows Server 2016"),
    (r"windows8Server64Guest", "Windows Server 2012"),
    (r"windows7Server64Guest", "Windows Server 2008 R2"),
    (r"windows11_64Guest", "Windows 11"),
    (r"windows9(_64)?Guest", "Windows 10"),
    (r"otherLinux64Guest|other[2-6]xLinux64Guest", "Other Linux (64-bit)"),
)
"""VMware guest ids → the CloudStack OS type (``listOsTypes`` description) a template of that
guest carries; matched as a word prefix of the template's ``ostypename``."""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def guest_os_type(spec: Mapping[str, Any]) -> str | None:
    """The CloudStack OS type description prefix for the source's guest OS, or None.

    From the guest id (``spec["guest_os"]``) through :data:`GUEST_OS_TYPES`, else from the
    guest's full name (``spec["guest_full_name"]``, e.g. ``Red Hat Enterprise Linux 8
    (64-bit)`` → ``Red Hat Enterprise Linux 8``; ``Microsoft Windows Server 2019 (64-bit)`` →
    ``Windows Server 2019``).
    """
    guest_id = str(spec.get("guest_os") or "")
    for pattern, description in GUEST_OS_TYPES:
        m = re.fullmatch(pattern, guest_id)
        if m:
            return description.format(*m.groups())
    full = str(spec.get("guest_full_name") or "")
    if full and full != guest_id and not full.lower().startswith("other"):
        name = re.sub(r"\s*\((32|64)-bit\)\s*$", "", full)
        name = re.sub(r"^Microsoft\s+", "", name)
        return re.sub(r"^Ubuntu Linux\b", "Ubuntu", name).strip() or None
    return None


def _matches(os_type: str, template: Mapping[str, Any]) -> bool:
    want, have = _words(os_type), _words(str(template.get("ostypename") or ""))
    return bool(want) and have[: len(want)] == want


def _catalog(templates: list[dict[str, Any]]) -> str:
    if not templates:
        return "the zone has no templates"
    return "templates: " + ", ".join(
        f"{t.get('name')} ({t.get('id')}, {t.get('ostypename') or 'no OS type'})" for t in templates
    )


def choose_template(
    templates: list[dict[str, Any]], spec: Mapping[str, Any], requested: str | None = None
) -> tuple[dict[str, Any], str]:
    """``(template, why)``: the ``requested`` template (must be among ``templates``, the
    zone's executable ones), else the one template whose OS type matches the source's guest OS
    (:func:`guest_os_type`). Refused, with the list of templates, when the requested one does
    not exist, when no OS type is known or matches, or when several templates match."""
    if requested is not None:
        found = next((t for t in templates if t.get("id") == requested), None)
        if found is None:
            raise TargetInvalid(
                "template_id",
                f"template {requested} does not exist in the zone; {_catalog(templates)}",
            )
        return found, "requested"
    os_type = guest_os_type(spec)
    guest = spec.get("guest_full_name") or spec.get("guest_os") or "unknown"
    if os_type is None:
        raise TargetInvalid(
            "template_id",
            f"the source VM's guest OS ({guest}) maps to no CloudStack OS type; name a "
            f"template_id ({_catalog(templates)})",
        )
    ready = [t for t in templates if t.get("isready", True)]
    matching = [t for t in ready if _matches(os_type, t)]
    if not matching:
        raise TargetInvalid(
            "template_id",
            f"no template has the OS type {os_type!r} of the source VM's guest OS ({guest}); "
            f"name a template_id ({_catalog(templates)})",
        )
    if len(matching) > 1:
        raise TargetInvalid(
            "template_id",
            f"{len(matching)} templates match the OS type {os_type!r}; name one with "
            f"template_id ({_catalog(matching)})",
        )
    return matching[0], f"OS type {matching[0].get('ostypename')}"
