"""Simulator state: the fixture catalog, VMs, volumes and async jobs, persisted as JSON.

Everything lives in one dict guarded by one lock and is written atomically to
``<state-dir>/state.json`` after each change, so a restarted simulator continues where it
stopped. Each volume is backed by a sparse file ``<state-dir>/volumes/<id>.img`` of the
volume's size. When a volume is attached to the VM that plays the OMA, the simulator creates
``<by-id-dir>/virtio-<serial>`` (serial = uuid without hyphens, first 20 characters) pointing
at that file, like KVM + udev do for a virtio disk whose serial CloudStack set.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import settings as settings_mod

GIB = 1024**3
TEMPLATE_SIZE = 2 * GIB
OMA_ROOT_SIZE = 1 * GIB


def now_text() -> str:
    """CloudStack's date format: ``yyyy-MM-dd'T'HH:mm:ssZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def new_id() -> str:
    """A fresh entity uuid."""
    return str(uuid.uuid4())


def device_serial(volume_id: str) -> str:
    """The virtio serial CloudStack gives a volume on KVM: uuid without hyphens, 20 chars."""
    return volume_id.replace("-", "")[:20]


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` over ``dst`` (same inode, holes kept as holes): for snapshots and reverts."""
    with open(src, "rb") as fi, open(dst, "r+b" if dst.exists() else "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        fo.truncate(0)
        fo.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fi.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fi.fileno(), start, os.SEEK_HOLE)
            fi.seek(start)
            fo.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = fi.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                fo.write(chunk)
                remaining -= len(chunk)
            offset = end


# guest OS types as listOsTypes shows them (descriptions of the guest_os table), by category
OS_CATEGORIES = {
    "RedHat": "0d2d6a9e-0000-4000-8000-0000000000c1",
    "Ubuntu": "0d2d6a9e-0000-4000-8000-0000000000c2",
    "Windows": "0d2d6a9e-0000-4000-8000-0000000000c3",
    "Debian": "0d2d6a9e-0000-4000-8000-0000000000c4",
    "CentOS": "0d2d6a9e-0000-4000-8000-0000000000c5",
    "Other": "0d2d6a9e-0000-4000-8000-0000000000c6",
}
OS_TYPES = [
    ("Red Hat Enterprise Linux 8", "RedHat"),
    ("Red Hat Enterprise Linux 9", "RedHat"),
    ("Ubuntu 20.04 LTS", "Ubuntu"),
    ("Ubuntu 22.04 LTS", "Ubuntu"),
    ("Debian GNU/Linux 11 (64-bit)", "Debian"),
    ("CentOS 7", "CentOS"),
    ("Windows Server 2016 (64-bit)", "Windows"),
    ("Windows Server 2019 (64-bit)", "Windows"),
    ("Windows Server 2022 (64-bit)", "Windows"),
    ("Other Linux (64-bit)", "Other"),
]
# name, display text, guest OS type, size; the first one is the fixture's ``template_id``
TEMPLATES = [
    ("rhel8-migrated", "RHEL 8 base", "Red Hat Enterprise Linux 8", TEMPLATE_SIZE),
    ("ubuntu-22.04", "Ubuntu 22.04 LTS", "Ubuntu 22.04 LTS", TEMPLATE_SIZE),
    ("windows-2019", "Windows Server 2019", "Windows Server 2019 (64-bit)", TEMPLATE_SIZE),
]


def _network(zone: str, name: str, prefix: str) -> dict[str, Any]:
    return {
        "id": new_id(),
        "name": name,
        "displaytext": name,
        "zoneid": zone,
        "zonename": "zone1",
        "type": "Isolated",
        "traffictype": "Guest",
        "state": "Implemented",
        "cidr": f"{prefix}.0/24",
        "gateway": f"{prefix}.1",
        "netmask": "255.255.255.0",
        "networkdomain": "cs2cloud.internal",
        "canusefordeploy": True,
        "acltype": "Account",
        "networkofferingid": new_id(),
    }


def _template(
    zone: str, created: str, name: str, text: str, os_type: dict[str, Any], size: int
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "name": name,
        "displaytext": text,
        "isready": True,
        "status": "Download Complete",
        "format": "QCOW2",
        "hypervisor": "KVM",
        "ostypeid": os_type["id"],
        "ostypename": os_type["description"],
        "size": size,
        "zoneid": zone,
        "zonename": "zone1",
        "templatetype": "USER",
        "ispublic": False,
        "isfeatured": False,
        "bootable": True,
        "passwordenabled": False,
        "deployasis": False,
        "account": "admin",
        "domain": "ROOT",
        "created": created,
        "tags": [],
    }


def _fixture() -> dict[str, Any]:
    zone = new_id()
    created = now_text()
    oma_vm = new_id()
    os_types = [
        {
            "id": new_id(),
            "description": text,
            "oscategoryid": OS_CATEGORIES[cat],
            "isuserdefined": False,
        }
        for text, cat in OS_TYPES
    ]
    by_name = {o["description"]: o for o in os_types}
    offerings = [
        {
            "id": new_id(),
            "name": "Small",
            "displaytext": "1 vCPU 1 GB",
            "cpunumber": 1,
            "cpuspeed": 1000,
            "memory": 1024,
            "iscustomized": False,
        },
        {
            "id": new_id(),
            "name": "Medium",
            "displaytext": "2 vCPU 4 GB",
            "cpunumber": 2,
            "cpuspeed": 1000,
            "memory": 4096,
            "iscustomized": False,
        },
        {
            "id": new_id(),
            "name": "Custom",
            "displaytext": "Custom CPU, speed and memory",
            "cpunumber": None,
            "cpuspeed": None,
            "memory": None,
            "iscustomized": True,
        },
        {
            "id": new_id(),
            "name": "Custom fixed speed",
            "displaytext": "Custom CPU and memory at 2000 MHz",
            "cpunumber": None,
            "cpuspeed": 2000,
            "memory": None,
            "iscustomized": True,
        },
    ]
    for o in offerings:
        o.update(
            {
                "storagetype": "shared",
                "provisioningtype": "thin",
                "offerha": False,
                "issystem": False,
                "created": created,
            }
        )
    disk_offerings = [
        {
            "id": new_id(),
            "name": "Custom",
            "displaytext": "Custom size",
            "disksize": 0,
            "iscustomized": True,
        },
        {
            "id": new_id(),
            "name": "Small",
            "displaytext": "5 GB",
            "disksize": 5,
            "iscustomized": False,
        },
        {
            "id": new_id(),
            "name": "Medium",
            "displaytext": "20 GB",
            "disksize": 20,
            "iscustomized": False,
        },
    ]
    for o in disk_offerings:
        o.update({"storagetype": "shared", "provisioningtype": "thin", "created": created})
    return {
        "zones": [
            {
                "id": zone,
                "name": "zone1",
                "networktype": "Advanced",
                "allocationstate": "Enabled",
                "securitygroupsenabled": False,
                "localstorageenabled": False,
                "tags": [],
            }
        ],
        "service_offerings": offerings,
        "disk_offerings": disk_offerings,
        "networks": [
            _network(zone, "guest-net", "10.1.1"),
            _network(zone, "guest-net-2", "10.1.2"),
        ],
        "os_types": os_types,
        "templates": [
            _template(zone, created, name, text, by_name[os_name], size)
            for name, text, os_name, size in TEMPLATES
        ],
        "backup_offerings": [
            {
                "id": new_id(),
                "name": "Gold",
                "description": "Daily backups",
                "externalid": "gold",
                "zoneid": zone,
                "zonename": "zone1",
                "allowuserdrivenbackups": True,
                "created": created,
            }
        ],
        "oma_vm_id": oma_vm,
    }


class Store:
    """The simulator's whole state plus the files it owns (backing files, by-id links)."""

    def __init__(self, state_dir: Path, by_id_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.by_id_dir = Path(by_id_dir)
        self.volume_dir = self.state_dir / "volumes"
        self.path = self.state_dir / "state.json"
        self.lock = threading.RLock()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.volume_dir.mkdir(exist_ok=True)
        self.by_id_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        else:
            self.data = {
                **_fixture(),
                "vms": {},
                "volumes": {},
                "jobs": {},
                "vm_snapshots": {},
                "settings": {},
                "counter": 100,
            }
            self._create_oma_vm()
            self.save()
        self.relink()

    # ----- persistence -------------------------------------------------------------------
    def save(self) -> None:
        """Write the state atomically (temp file + rename)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    # ----- global settings -------------------------------------------------------------------
    def setting(self, name: str) -> Any:
        """The current value of a global setting (see :mod:`cloudstack_sim.settings`)."""
        return self.data.setdefault("settings", {}).get(name, settings_mod.SETTINGS[name].default)

    def settings(self) -> dict[str, Any]:
        """Every setting with its current value."""
        return {**settings_mod.defaults(), **self.data.setdefault("settings", {})}

    def update_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate all of ``values`` (ValueError names the first bad one), then apply them."""
        checked = {name: settings_mod.coerce(name, value) for name, value in values.items()}
        self.data.setdefault("settings", {}).update(checked)
        self.save()
        return self.settings()

    def is_admin(self) -> bool:
        """Whether the API key belongs to an admin account (setting ``sim.account.type``)."""
        return bool(self.setting("sim.account.type") == "admin")

    def fixture(self, endpoint: str | None = None) -> dict[str, Any]:
        """The ids a test or operator needs (what ``fixture.json`` holds)."""
        d = self.data
        so = {o["name"]: o["id"] for o in d["service_offerings"]}
        do = {o["name"]: o["id"] for o in d["disk_offerings"]}
        out = {
            "zone_id": d["zones"][0]["id"],
            "network_id": d["networks"][0]["id"],
            "template_id": d["templates"][0]["id"],
            "oma_vm_id": d["oma_vm_id"],
            "custom_disk_offering_id": do["Custom"],
            "disk_offering_ids": do,
            "service_offering_id": so["Small"],
            "custom_service_offering_id": so["Custom"],
            "service_offering_ids": so,
            "template_ids": {t["name"]: t["id"] for t in d["templates"]},
            "network_ids": {n["name"]: n["id"] for n in d["networks"]},
            "backup_offering_ids": {b["name"]: b["id"] for b in d.get("backup_offerings", [])},
            "by_id_dir": str(self.by_id_dir),
            "state_dir": str(self.state_dir),
        }
        if endpoint:
            out["endpoint"] = endpoint
        return out

    def next_number(self) -> int:
        """A growing integer for instance and ROOT volume names."""
        self.data["counter"] += 1
        return int(self.data["counter"])

    # ----- backing files and by-id links ----------------------------------------------------
    def backing_path(self, volume_id: str) -> Path:
        """The sparse file that holds a volume's bytes."""
        return self.volume_dir / f"{volume_id}.img"

    def create_backing(self, volume_id: str, size: int) -> None:
        """Create (or grow) the sparse backing file."""
        path = self.backing_path(volume_id)
        with open(path, "ab") as fh:
            if fh.tell() < size:
                fh.truncate(size)

    def remove_backing(self, volume_id: str) -> None:
        """Delete a volume's backing file."""
        with contextlib.suppress(FileNotFoundError):
            self.backing_path(volume_id).unlink()

    def snapshot_path(self, snapshot_id: str) -> Path:
        """The sparse copy that holds a snapshot's bytes."""
        return self.state_dir / "snapshots" / f"{snapshot_id}.img"

    def link_path(self, volume_id: str) -> Path:
        """``<by-id-dir>/virtio-<serial>`` for a volume."""
        return self.by_id_dir / f"virtio-{device_serial(volume_id)}"

    def link(self, volume_id: str) -> None:
        """Make the volume visible as a block device of the OMA."""
        link = self.link_path(volume_id)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(self.backing_path(volume_id).resolve())

    def unlink(self, volume_id: str) -> None:
        """Remove the OMA's by-id entry of a volume (detach)."""
        with contextlib.suppress(FileNotFoundError):
            self.link_path(volume_id).unlink()

    def relink(self) -> None:
        """After a restart: by-id entries exist exactly for volumes attached to the OMA VM."""
        oma = self.data["oma_vm_id"]
        for vol in self.data["volumes"].values():
            if vol.get("virtualmachineid") == oma and vol["type"] == "DATADISK":
                self.link(vol["id"])
            else:
                self.unlink(vol["id"])

    # ----- fixture VM ----------------------------------------------------------------------
    def _create_oma_vm(self) -> None:
        d = self.data
        vm_id = d["oma_vm_id"]
        so = d["service_offerings"][1]
        num = self.next_number()
        d["vms"][vm_id] = {
            "id": vm_id,
            "name": "oma-appliance",
            "displayname": "oma-appliance",
            "state": "Running",
            "zoneid": d["zones"][0]["id"],
            "templateid": d["templates"][0]["id"],
            "serviceofferingid": so["id"],
            "cpunumber": so["cpunumber"],
            "cpuspeed": so["cpuspeed"],
            "memory": so["memory"],
            "instancename": f"i-2-{num}-VM",
            "num": num,
            "hostid": new_id(),
            "created": now_text(),
            "nics": [
                {
                    "id": new_id(),
                    "networkid": d["networks"][0]["id"],
                    "ipaddress": "10.1.1.5",
                    "macaddress": "02:00:00:00:00:05",
                    "isdefault": True,
                }
            ],
            "details": {},
        }
        self.add_root_volume(vm_id, num, OMA_ROOT_SIZE)

    def add_root_volume(
        self, vm_id: str, num: int, size: int, state: str = "Ready"
    ) -> dict[str, Any]:
        """Create a VM's ROOT volume (device 0); a ``Ready`` one gets its backing file."""
        vol_id = new_id()
        vol = {
            "id": vol_id,
            "name": f"ROOT-{num}",
            "type": "ROOT",
            "size": size,
            "zoneid": self.data["zones"][0]["id"],
            "state": state,
            "diskofferingid": None,
            "virtualmachineid": vm_id,
            "deviceid": 0,
            "created": now_text(),
            "attached": now_text(),
        }
        self.data["volumes"][vol_id] = vol
        if state == "Ready":
            self.create_backing(vol_id, size)
        return vol
