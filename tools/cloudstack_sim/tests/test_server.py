"""The process as operators start it, and many clients at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from labtest.procs import free_port, wait_until

from .conftest import make_client


def test_console_entry_prints_ready_line_and_uses_env_credentials(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "CLOUDSTACK_SIM_API_KEY": "k-env", "CLOUDSTACK_SIM_SECRET_KEY": "s-env"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudstack_sim",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path / "st"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
        start_new_session=True,
    )
    try:
        line = json.loads(proc.stdout.readline())
        assert line["ready"] is True
        assert line["endpoint"] == f"http://127.0.0.1:{port}/client/api"
        assert "s-env" not in json.dumps(line)
        assert not (tmp_path / "st" / "credentials.json").exists()
        assert (tmp_path / "st" / "by-id").is_dir()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()


def test_bad_fault_spec_stops_startup(tmp_path) -> None:
    env = {**os.environ, "CLOUDSTACK_SIM_FAULTS": "attachVolume:bogus"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudstack_sim",
            "--port",
            str(free_port()),
            "--state-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert "CLOUDSTACK_SIM_FAULTS" in res.stderr and "bogus" in res.stderr


def test_parallel_attaches_get_distinct_device_ids(sim) -> None:
    def create_and_attach(i: int) -> int:
        c = make_client(sim)
        try:
            vol = c.createVolume(
                name=f"p{i}", zoneid=sim.zone_id, diskofferingid=sim.custom_disk_offering_id, size=1
            )["volume"]
            return c.attachVolume(id=vol["id"], virtualmachineid=sim.oma_vm_id)["volume"][
                "deviceid"
            ]
        finally:
            c.session.close()

    with ThreadPoolExecutor(8) as pool:
        devices = list(pool.map(create_and_attach, range(8)))
    # VolumeApiServiceImpl.getDeviceId: 3 is the CD-ROM's, never a disk's
    assert sorted(devices) == [1, 2, 4, 5, 6, 7, 8, 9]
    wait_until(lambda: len(list(sim.by_id_dir.iterdir())) == 8, timeout=5)
