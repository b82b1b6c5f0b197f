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


def _fixture() -> dict[str, Any]:
    zone = new_id()
    created = now_text()
    network = new_id()
    template = new_id()
    oma_vm = new_id()
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
            "displaytext": "Custom CPU and memory",
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
            {
                "id": network,
                "name": "guest-net",
                "displaytext": "guest network",
                "zoneid": zone,
                "zonename": "zone1",
                "type": "Isolated",
                "traffictype": "Guest",
                "state": "Implemented",
                "cidr": "10.1.1.0/24",
                "gateway": "10.1.1.1",
                "netmask": "255.255.255.0",
                "canusefordeploy": True,
                "acltype": "Account",
                "networkofferingid": new_id(),
            }
        ],
        "templates": [
            {
                "id": template,
                "name": "rhel8-migrated",
                "displaytext": "RHEL 8 base",
                "isready": True,
                "status": "Download Complete",
                "format": "QCOW2",
                "hypervisor": "KVM",
                "ostypeid": new_id(),
                "ostypename": "Red Hat Enterprise Linux 8",
                "size": TEMPLATE_SIZE,
                "zoneid": zone,
                "zonename": "zone1",
                "templatetype": "USER",
                "ispublic": False,
                "isfeatured": False,
                "bootable": True,
                "passwordenabled": False,
                "account": "admin",
                "domain": "ROOT",
                "created": created,
                "tags": [],
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
            self.data = {**_fixture(), "vms": {}, "volumes": {}, "jobs": {}, "counter": 100}
            self._create_oma_vm()
            self.save()
        self.relink()

    # ----- persistence -------------------------------------------------------------------
    def save(self) -> None:
        """Write the state atomically (temp file + rename)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

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

    def add_root_volume(self, vm_id: str, num: int, size: int) -> dict[str, Any]:
        """Create a VM's ROOT volume (device 0, Ready) with its backing file."""
        vol_id = new_id()
        vol = {
            "id": vol_id,
            "name": f"ROOT-{num}",
            "type": "ROOT",
            "size": size,
            "zoneid": self.data["zones"][0]["id"],
            "state": "Ready",
            "diskofferingid": None,
            "virtualmachineid": vm_id,
            "deviceid": 0,
            "created": now_text(),
            "attached": now_text(),
        }
        self.data["volumes"][vol_id] = vol
        self.create_backing(vol_id, size)
        return vol
