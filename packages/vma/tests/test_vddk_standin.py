"""The VDDK stand-in (tools/vddk) under a real nbdkit against the lab's vcsim: the parameters of
nbdkit-vddk-plugin(1) and its refusals, the bytes and allocation it serves, and that the VMA's
own nbdkit command (``vddk_argv``) is one it accepts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labtest.labvm import create_lab_vm, lab_disk_sha256, write_lab_disk
from labtest.vcsim import VcsimInfo, vcsim
from vma.services import processes
from vma.sources.base import DiskRequest
from vma.sources.vsphere import VSphereSource, vddk_argv
from vma.vmware import VSphereClient

MiB = 1 << 20
VDDK_DIR = Path(__file__).resolve().parents[3] / "tools" / "vddk"
PLUGIN = ["python", str(VDDK_DIR / "plugin.py")]
#: Prints the size, the allocation map and copies the disk; exits non-zero if nbdkit refuses.
CHECK = 'nbdinfo --size "$uri" && nbdinfo --map --json "$uri" >"$OUT/map.json" && '
CHECK += 'nbdcopy "$uri" "$OUT/disk.raw"'


@dataclass
class Lab:
    sim: VcsimInfo
    lab_dir: Path
    tmp: Path
    vm: dict[str, Any]
    other: dict[str, Any]
    snapshot: str
    thumbprint: str
    password_file: Path

    def params(self, disk: int = 0, **change: str | None) -> list[str]:
        """The VDDK parameters as the VMA gives them; ``change`` overrides (None drops one)."""
        values: dict[str, str | None] = {
            "libdir": str(VDDK_DIR),
            "server": self.sim.host,
            "port": str(self.sim.port),
            "user": self.sim.username,
            "password": f"+{self.password_file}",
            "vm": f"moref={self.vm['moref']}",
            "snapshot": self.snapshot,
            "file": self.vm["disks"][disk]["vmdk_path"],
            "transports": "nbdssl:nbd",
            "thumbprint": self.thumbprint,
        }
        values.update(change)
        return [f"{k}={v}" for k, v in values.items() if v is not None]

    def run(
        self, args: list[str], check: str = CHECK, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """``nbdkit -U - python plugin.py ARGS --run CHECK`` (exit status = CHECK's)."""
        argv = ["nbdkit", "--readonly", "-U", "-", *PLUGIN, *args, "--run", check]
        return self.run_argv(argv, **kw)

    def run_argv(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, VDDK_LAB_DIR=str(self.lab_dir), OUT=str(self.tmp))
        env.update(kw.pop("env", {}))
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, **kw)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("vddk")
    lab_dir = tmp / "lab"
    with vcsim(tmp, extra_env={"VCSIM_LAB_DIR": str(lab_dir)}) as sim:
        vm = create_lab_vm(sim, lab_dir, "vddk-a", [4 * MiB, 2 * MiB], seed=3)
        other = create_lab_vm(sim, lab_dir, "vddk-b", [1 * MiB], seed=4)
        with VSphereClient(
            sim.host, sim.username, sim.password, port=sim.port, ca_file=sim.ca_file
        ) as client:
            client.enable_cbt(vm["id"])
            snapshot = client.create_snapshot(vm["id"], "vddk-test")
            thumbprint = client.server_thumbprint()
        password_file = tmp / "password"
        password_file.write_text(sim.password + "\n")
        yield Lab(sim, lab_dir, tmp, vm, other, snapshot, thumbprint, password_file)


def test_serves_the_snapshot_disk_bytes_and_allocation(lab: Lab) -> None:
    for index, disk in enumerate(lab.vm["disks"]):
        result = lab.run(lab.params(disk=index))
        assert result.returncode == 0, result.stderr
        assert int(result.stdout.split()[0]) == disk["capacity_bytes"]
        image = lab.vm["images"][disk["key"]]
        copied = hashlib.sha256((lab.tmp / "disk.raw").read_bytes()).hexdigest()
        assert copied == lab_disk_sha256(image)
        # base:allocation = the image's allocation as qemu-img maps it
        qemu = json.loads(
            subprocess.run(
                ["qemu-img", "map", "--output=json", image],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        served = json.loads((lab.tmp / "map.json").read_text())
        data = [(e["offset"], e["length"]) for e in served if e["type"] == 0]
        expected = [(e["start"], e["length"]) for e in qemu if e["data"]]
        assert data and data == expected
        assert all(e["type"] == 3 for e in served if e["type"] != 0)  # hole,zero


def test_the_vmas_own_command_is_accepted(lab: Lab) -> None:
    """vddk_argv (what the VSphereSource starts) with the stand-in as its plugin."""
    disk = lab.vm["disks"][1]
    argv = vddk_argv(
        nbdkit="nbdkit",
        libdir=str(VDDK_DIR),
        server=lab.sim.host,
        port=lab.sim.port,
        user=lab.sim.username,
        password_file=lab.password_file,
        thumbprint=lab.thumbprint,
        vm_moref=lab.vm["moref"],
        snapshot_id=lab.snapshot,
        vmdk_path=disk["vmdk_path"],
        socket_path=lab.tmp / "unused.sock",
        plugin=PLUGIN,
    )
    assert lab.sim.password not in " ".join(argv)
    # serve on a socket of nbdkit's choosing and check the disk through it
    argv = [a for a in argv if a != "--foreground"]
    i = argv.index("-U")
    argv[i + 1] = "-"
    result = lab.run_argv([*argv, "--run", CHECK])
    assert result.returncode == 0, result.stderr
    copied = hashlib.sha256((lab.tmp / "disk.raw").read_bytes()).hexdigest()
    assert copied == lab_disk_sha256(lab.vm["images"][disk["key"]])


def test_every_documented_parameter_is_accepted(lab: Lab) -> None:
    config = lab.tmp / "vddk.conf"
    config.write_text("vixDiskLib.transport.LogLevel = 1\n")
    extra = [
        "compression=zlib",
        f"config={config}",
        "nfchostport=902",
        "single-link=true",
        "unbuffered=false",
        "vimapiver=6.5",
    ]
    result = lab.run([*lab.params(), *extra], check='nbdinfo --size "$uri"')
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("param", "error"),
    [
        ("pasword=secret", "unknown parameter 'pasword'"),
        ("snapshot-id=snapshot-1", "unknown parameter 'snapshot-id'"),
        ("reexeced_=1", "unknown parameter 'reexeced_'"),
        ("compression=gzip", "unknown compression type: gzip"),
        ("single-link=maybe", "could not decipher boolean (maybe)"),
        ("nfchostport=99999", "nfchostport: could not parse number"),
        ("create-size=1000", "create-size must be greater than zero and a multiple of 512"),
        ("libdir=/nonexistent/vddk", "realpath: /nonexistent/vddk"),
    ],
)
def test_bad_parameters_fail_as_the_real_plugin(lab: Lab, param: str, error: str) -> None:
    result = lab.run([*lab.params(), param], check="true")
    assert result.returncode != 0
    assert error in result.stderr


@pytest.mark.parametrize("missing", ["file", "server", "user", "password", "vm"])
def test_a_remote_connection_needs_every_parameter(lab: Lab, missing: str) -> None:
    result = lab.run(lab.params(**{missing: None}), check="true")
    assert result.returncode != 0
    if missing == "file":
        assert "you must supply the file=<FILENAME> parameter" in result.stderr
    else:
        assert f"remote connection requested, missing parameter: {missing}" in result.stderr


def test_password_forms(lab: Lab) -> None:
    plain = lab.run(lab.params(password=lab.sim.password), check='nbdinfo --size "$uri"')
    assert plain.returncode == 0, plain.stderr
    read_fd, write_fd = os.pipe()
    os.write(write_fd, lab.sim.password.encode() + b"\n")
    os.close(write_fd)
    try:
        by_fd = lab.run(
            lab.params(password=f"-{read_fd}"), check='nbdinfo --size "$uri"', pass_fds=[read_fd]
        )
    finally:
        os.close(read_fd)
    assert by_fd.returncode == 0, by_fd.stderr
    interactive = lab.run(lab.params(password="-"), check="true", stdin=subprocess.DEVNULL)
    assert interactive.returncode != 0
    assert "stdin is not a tty, cannot read password interactively" in interactive.stderr
    missing = lab.run(lab.params(password=f"+{lab.tmp / 'no-such-file'}"), check="true")
    assert missing.returncode != 0 and "no-such-file" in missing.stderr


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"password": "wrong-password"}, "InvalidLogin"),
        ({"vm": "moref=vm-999999"}, "ManagedObjectNotFound"),
        ({"vm": "uuid=abc"}, "the VDDK stand-in understands vm=moref=ID only"),
        ({"snapshot": "snapshot-999999"}, "ManagedObjectNotFound"),
        ({"file": "[LocalDS_0] vddk-a/other.vmdk"}, "is not a disk of VM moref="),
        ({"thumbprint": None}, "Failed to verify SSL certificate: actual thumbprint="),
        ({"thumbprint": "12:34"}, "Failed to verify SSL certificate: actual thumbprint="),
    ],
)
def test_refusals(lab: Lab, change: dict[str, str | None], error: str) -> None:
    result = lab.run(lab.params(**change), check='nbdinfo --size "$uri"')
    assert result.returncode != 0
    assert error in result.stderr, result.stderr
    assert lab.sim.password not in result.stderr


def test_a_disk_of_another_vm_is_refused(lab: Lab) -> None:
    result = lab.run(
        lab.params(file=lab.other["disks"][0]["vmdk_path"]), check='nbdinfo --size "$uri"'
    )
    assert result.returncode != 0
    assert "is not a disk of VM moref=" in result.stderr
    snapshot_of_other = lab.run(
        lab.params(vm=f"moref={lab.other['moref']}", file=lab.other["disks"][0]["vmdk_path"]),
        check='nbdinfo --size "$uri"',
    )
    assert snapshot_of_other.returncode != 0
    assert f"is not a snapshot of VM moref={lab.other['moref']}" in snapshot_of_other.stderr


def test_a_disk_written_after_the_snapshot_is_refused(lab: Lab, tmp_path: Path) -> None:
    """The lab keeps no older copy of a disk: a snapshot disk is served only while unchanged."""
    vm = create_lab_vm(lab.sim, lab.lab_dir, "vddk-c", [1 * MiB], seed=5)
    with VSphereClient(
        lab.sim.host, lab.sim.username, lab.sim.password, port=lab.sim.port, ca_file=lab.sim.ca_file
    ) as client:
        client.enable_cbt(vm["id"])
        snapshot = client.create_snapshot(vm["id"], "before-write")
    args = lab.params(
        vm=f"moref={vm['moref']}", snapshot=snapshot, file=vm["disks"][0]["vmdk_path"]
    )
    assert lab.run(args, check='nbdinfo --size "$uri"').returncode == 0
    write_lab_disk(lab.lab_dir, vm["id"], str(vm["disks"][0]["key"]), 0, (7, 4096))
    result = lab.run(args, check='nbdinfo --size "$uri"')
    assert result.returncode != 0
    assert "was written after the snapshot" in result.stderr


def test_without_the_lab_directory_the_standin_does_not_start(lab: Lab) -> None:
    result = lab.run(lab.params(), check="true", env={"VDDK_LAB_DIR": ""})
    assert result.returncode != 0
    assert "VDDK_LAB_DIR is not set" in result.stderr


def test_the_vsphere_source_serves_after_its_starting_thread_ended(
    lab: Lab, tmp_path: Path
) -> None:
    """The VMA starts disk servers from a job thread that then ends; nbdkit 1.32 always dies
    with the thread that started it, so the source keeps it under a supervisor. The job
    directory's path is longer than a unix socket path may be."""
    work = tmp_path / ("job-" + "x" * 100)
    work.mkdir()
    with VSphereClient(
        lab.sim.host, lab.sim.username, lab.sim.password, port=lab.sim.port, ca_file=lab.sim.ca_file
    ) as client:
        source = VSphereSource(
            client,
            server=lab.sim.host,
            port=lab.sim.port,
            user=lab.sim.username,
            password=lab.sim.password,
            env=dict(os.environ, VDDK_LAB_DIR=str(lab.lab_dir)),
            libdir=str(VDDK_DIR),
            thumbprint=client.server_thumbprint(),
            plugin=PLUGIN,
        )
        vm = client.get_vm(lab.vm["id"])
        box: dict[str, Any] = {}
        disks = [DiskRequest(str(d["key"])) for d in vm["disks"]]
        thread = threading.Thread(
            target=lambda: box.update(done=source.prepare(vm, lab.snapshot, disks, work))
        )
        thread.start()
        thread.join()
        prepared, state = box["done"]
        try:  # the starting thread is gone; the servers must still answer
            for entry, disk in zip(prepared, vm["disks"], strict=True):
                size = subprocess.run(
                    ["nbdinfo", "--size", entry.source], capture_output=True, text=True
                )
                assert size.returncode == 0, size.stderr
                assert int(size.stdout) == disk["capacity_bytes"]
        finally:
            source.finish(state, success=True)
        assert not any(Path(f).exists() for f in state.files)
        assert all(not processes.alive(s["pid"], s["start"]) for s in state.servers)
