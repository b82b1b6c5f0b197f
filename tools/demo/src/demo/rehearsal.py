"""The test failover (rehearsal) during the incremental sync, through the OMA's public API, and
the check that its end leaves the simulated CloudStack as it was (CloudStack's own lists: VMs,
volumes, snapshots, as any CloudStack user could read them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .api import DemoError, OmaApi, error_text


@dataclass
class TestRun:
    """A test failover as the summary shows it."""

    __test__ = False  # not a pytest class

    id: str
    vm_name: str = ""
    start_seconds: float = 0.0
    end_seconds: float = 0.0
    during_job: str | None = None
    clean: bool = False


def inventory(sim: Any) -> dict[str, list[str]]:
    """What the simulated CloudStack holds: VMs that are not Destroyed or expunged, volumes and
    snapshots (ids, sorted)."""
    from oma.cloudstack import CloudStackClient

    client = CloudStackClient(sim.endpoint, sim.api_key, sim.secret_key, poll_interval=0.05)
    try:
        return {
            "vms": sorted(v["id"] for v in client.list_vms()),
            "volumes": sorted(v["id"] for v in client.list_volumes()),
            "snapshots": sorted(s["id"] for s in client.list_snapshots()),
        }
    finally:
        client.close()


def start(api: OmaApi, context_id: str, network_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /vm-contexts/{id}/failover {type: test}`` with every NIC on ``network_id``."""
    status, rec = api.request(
        "POST",
        f"vm-contexts/{context_id}/failover",
        {"type": "test", "test_network_id": network_id, **body},
    )
    if status != 202:
        raise DemoError(f"POST /vm-contexts/{{id}}/failover (test) → {status}: {error_text(rec)}")
    return rec


def follow(
    api: OmaApi,
    test_id: str,
    say: Callable[[str, str], None],
    *,
    settled: Callable[[dict[str, Any]], bool],
    steps: Callable[[dict[str, Any]], list[dict[str, Any]]],
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Poll ``GET /test-failovers/{id}``, printing step changes, until ``settled``."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        rec = api.get(f"test-failovers/{test_id}")
        for step in steps(rec):
            name, status = step.get("name"), step.get("status")
            key = f"{status} {step.get('waiting_for') or ''}"
            if seen.get(name) != key and status != "pending":
                seen[name] = key
                why = f" - {step['waiting_for']}" if step.get("waiting_for") else ""
                err = f": {step['error']}" if step.get("error") else ""
                say("test", f"  step {name}: {status}{why}{err}")
        if settled(rec):
            return rec
        if time.monotonic() > deadline:
            raise DemoError(f"test failover {test_id} still {rec.get('status')} after {timeout} s")
        time.sleep(0.25)


def started(rec: dict[str, Any]) -> bool:
    """The test VM runs, or the test failed."""
    return rec.get("status") in ("completed", "failed", "ended")


def ended(rec: dict[str, Any]) -> bool:
    """The test ended, or its end failed."""
    return rec.get("status") == "ended" or (rec.get("end") or {}).get("status") == "failed"


def end_steps(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps of the test's end."""
    return list((rec.get("end") or {}).get("steps") or [])
