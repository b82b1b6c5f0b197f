"""The CloudStack simulator as a test fixture: start it on a free port, read its ids, inject faults.

``cloudstack_sim(tmpdir)`` starts ``python -m cloudstack_sim`` with its state in
``tmpdir/state`` and by-id links in ``tmpdir/by-id``; starting it again on the same ``tmpdir``
continues with the persisted state (restart tests). Credentials are read from the state dir's
``credentials.json`` (the simulator writes it 0600); they never appear on a command line.
``settings={"allow.user.expunge.recover.vm": True, "sim.account.type": "user"}`` starts it with
CloudStack global settings (``--setting``); ``get_settings``/``set_settings`` read and change
them while it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import ManagedProcess, free_port


@dataclass
class SimInfo:
    """Where the running simulator is and the fixture ids it serves."""

    endpoint: str
    api_key: str
    secret_key: str
    zone_id: str
    oma_vm_id: str
    by_id_dir: Path
    state_dir: Path
    custom_disk_offering_id: str
    service_offering_id: str
    custom_service_offering_id: str
    network_id: str
    template_id: str
    template_ids: dict[str, str]
    network_ids: dict[str, str]
    service_offering_ids: dict[str, str]
    disk_offering_ids: dict[str, str]
    process: ManagedProcess
    fixture: dict[str, Any]

    @property
    def admin_url(self) -> str:
        """Base URL of the unsigned ``/sim/*`` admin endpoints."""
        return self.endpoint.rsplit("/client/api", 1)[0] + "/sim"


@contextlib.contextmanager
def cloudstack_sim(
    tmpdir: str | os.PathLike[str],
    *,
    faults: str | None = None,
    port: int | None = None,
    settings: dict[str, Any] | None = None,
) -> Iterator[SimInfo]:
    """Run the simulator for the duration of the block; stop it by PID afterwards.

    ``settings`` are global settings (name → value) passed as ``--setting name=value``.
    """
    base = Path(tmpdir)
    state_dir, by_id_dir = base / "state", base / "by-id"
    port = port or free_port()
    env = dict(os.environ)
    env.pop("CLOUDSTACK_SIM_FAULTS", None)
    if faults:
        env["CLOUDSTACK_SIM_FAULTS"] = faults
    argv = [
        sys.executable,
        "-m",
        "cloudstack_sim",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
        "--by-id-dir",
        str(by_id_dir),
    ]
    for name, value in (settings or {}).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        argv += ["--setting", f"{name}={text}"]
    proc = ManagedProcess(
        argv, name="cloudstack-sim", env=env, log_path=base / f"cloudstack-sim-{port}.log"
    ).start()
    try:
        proc.wait_port(port)
        proc.wait_path(state_dir / "fixture.json")
        fixture = json.loads((state_dir / "fixture.json").read_text())
        creds = json.loads((state_dir / "credentials.json").read_text())
        yield SimInfo(
            endpoint=f"http://127.0.0.1:{port}/client/api",
            api_key=creds["api_key"],
            secret_key=creds["secret_key"],
            zone_id=fixture["zone_id"],
            oma_vm_id=fixture["oma_vm_id"],
            by_id_dir=by_id_dir,
            state_dir=state_dir,
            custom_disk_offering_id=fixture["custom_disk_offering_id"],
            service_offering_id=fixture["service_offering_id"],
            custom_service_offering_id=fixture["custom_service_offering_id"],
            network_id=fixture["network_id"],
            template_id=fixture["template_id"],
            template_ids=fixture["template_ids"],
            network_ids=fixture["network_ids"],
            service_offering_ids=fixture["service_offering_ids"],
            disk_offering_ids=fixture["disk_offering_ids"],
            process=proc,
            fixture=fixture,
        )
    finally:
        proc.stop()


def _admin(
    sim: SimInfo, method: str, body: dict[str, Any] | None = None, path: str = "faults"
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{sim.admin_url}/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def inject_fault(
    sim: SimInfo,
    command: str,
    errorcode: int | None = 530,
    *,
    once: bool = True,
    errortext: str | None = None,
    delay: float = 0.0,
) -> dict[str, Any]:
    """Make ``command`` fail with ``errorcode`` (next call only when ``once``) and/or be slow."""
    body: dict[str, Any] = {
        "command": command,
        "errorcode": errorcode,
        "once": once,
        "delay": delay,
    }
    if errortext is not None:
        body["errortext"] = errortext
    return dict(_admin(sim, "POST", body))


def clear_faults(sim: SimInfo) -> None:
    """Remove every injected fault."""
    _admin(sim, "DELETE")


def list_faults(sim: SimInfo) -> list[dict[str, Any]]:
    """The simulator's active fault rules."""
    return list(_admin(sim, "GET")["faults"])


def get_settings(sim: SimInfo) -> dict[str, Any]:
    """The simulator's global settings (name → current value)."""
    return dict(_admin(sim, "GET", path="settings")["settings"])


def set_settings(sim: SimInfo, **values: Any) -> dict[str, Any]:
    """Change global settings at run time; pass dotted names as a dict: ``**{"a.b": 1}``."""
    return dict(_admin(sim, "PUT", values, path="settings")["settings"])
