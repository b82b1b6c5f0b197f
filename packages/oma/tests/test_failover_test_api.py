"""The test failover endpoints through the Flask test client: 202 records, 400 naming the
field, 409 conflicts, a live failover refused while a test is in place unless ``end_test``, and
syncs accepted beside a running test."""

from __future__ import annotations

from typing import Any

import pytest

from oma.database import database
from oma.database.models import ReplicaVolume, VmaAppliance, VmContext, VmDisk, Workflow
from oma.database.repos import contexts

TEST = {
    "type": "test",
    "network_mappings": {"VM Network": "isolated-net"},
    "service_offering_id": "so-1",
}
LIVE = {
    "type": "live",
    "network_mappings": {"VM Network": "net-1"},
    "service_offering_id": "so-1",
}
TWO_NICS = {
    "nics": [
        {"label": "Network adapter 1", "network": "VM Network"},
        {"label": "Network adapter 2", "network": "Backup Network"},
    ]
}


def _context(
    app: Any, *, spec: dict | None = None, state: str = "ready_for_failover", vm: str = "vm-1"
) -> str:
    with app.app_context(), database.connection_context():
        ctx = contexts.create_context(
            vcenter="vc.lab",
            vm_id=vm,
            name="web-1",
            spec=spec,
            disks=[{"disk_key": "2000", "capacity_bytes": 1 << 20}],
        )
        contexts.set_state(ctx.id, state, ready_for_failover=state == "ready_for_failover")
        vma = VmaAppliance.create(name=f"vma-{vm}", url="http://127.0.0.1:9", token_encrypted="x")
        VmContext.update(vma=vma.id).where(VmContext.id == ctx.id).execute()
        VmDisk.update(change_id="52 aa/1").where(VmDisk.context == ctx.id).execute()
        ReplicaVolume.create(
            context=ctx.id,
            disk_key="2000",
            size_bytes=1 << 20,
            cloudstack_volume_id=f"cs-{vm}",
            state="attached",
        )
        return ctx.id


def _post(client: Any, auth: Any, path: str, body: Any = None) -> Any:
    return client.post(f"/api/v1/{path}", json=body, headers=auth.operator)


def _set(app: Any, wf_id: str, status: str, context_state: str | None = None) -> None:
    with app.app_context(), database.connection_context():
        Workflow.update(status=status).where(Workflow.id == wf_id).execute()
        if context_state:
            contexts.set_state(Workflow.get_by_id(wf_id).context_id, context_state)


def test_start_a_test_failover_is_202_with_its_steps(app: Any, client: Any, auth: Any) -> None:
    ctx = _context(app)
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", {**TEST, "auto_end_after": "1h30m"})
    assert res.status_code == 202, res.json
    body = res.json
    assert res.headers["Location"].endswith(f"/api/v1/test-failovers/{body['id']}")
    assert (body["type"], body["status"], body["vm_context_id"]) == ("test", "pending", ctx)
    assert [s["name"] for s in body["steps"]] == [
        "validate",
        "snapshot_replicas",
        "create_volumes",
        "deploy_test_vm",
        "start_test_vm",
        "finalize",
    ]
    assert body["params"]["auto_end_after"] == 5400
    assert body["params"]["keep_macs"] is False  # the source keeps running with its MACs
    assert body["end"] is None
    got = client.get(f"/api/v1/test-failovers/{body['id']}", headers=auth.viewer)
    assert got.status_code == 200 and got.json["id"] == body["id"]
    listed = client.get(f"/api/v1/vm-contexts/{ctx}/test-failovers", headers=auth.viewer).json
    assert [t["id"] for t in listed["items"]] == [body["id"]]
    missing = client.get("/api/v1/test-failovers/nope", headers=auth.viewer)
    assert missing.status_code == 404


def test_an_isolated_network_maps_every_nic_and_is_never_implied(
    app: Any, client: Any, auth: Any
) -> None:
    ctx = _context(app, spec={"nics": TWO_NICS["nics"][:1]})
    body = {k: v for k, v in TEST.items() if k != "network_mappings"}
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", body)
    assert res.status_code == 400 and res.json["error"]["field"] == "network_mappings"
    assert "test_network_id" in res.json["error"]["message"]
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", {**body, "test_network_id": "iso"})
    assert res.status_code == 202, res.json
    assert res.json["params"]["network_mappings"] == {"VM Network": "iso"}

    # two NICs cannot share the one isolated network: map them
    two = _context(app, spec=TWO_NICS, vm="vm-2")
    res = _post(client, auth, f"vm-contexts/{two}/failover", {**body, "test_network_id": "iso"})
    assert res.status_code == 422 and res.json["error"]["field"] == "network_mappings"
    assert "one NIC per network" in res.json["error"]["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "rehearsal"}, "type"),
        ({"graceful_timeout_s": 60}, "graceful_timeout_s"),
        ({"force": False}, "force"),
        ({"end_test": True}, "end_test"),
        ({"test_network_id": "iso"}, "network_mappings"),  # both: one of them
        ({"auto_end_after": "soon"}, "auto_end_after"),
        ({"auto_end_after": 0}, "auto_end_after"),
        ({"auto_end_after": True}, "auto_end_after"),
        ({"vm_name": "-test"}, "vm_name"),
        ({"network_mappings": {}}, "network_mappings"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_test_requests_name_the_field(
    app: Any, client: Any, auth: Any, change: dict, field: str
) -> None:
    ctx = _context(app)
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", {**TEST, **change})
    assert res.status_code == 400, res.json
    assert res.json["error"]["field"] == field


def test_a_duration_past_thirty_days_fits_the_schema_but_is_refused(
    app: Any, client: Any, auth: Any
) -> None:
    ctx = _context(app)
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", {**TEST, "auto_end_after": "31d"})
    assert res.status_code == 422 and res.json["error"]["field"] == "auto_end_after"
    assert "between 1 second and 30 days" in res.json["error"]["message"]


@pytest.mark.parametrize("field", ["auto_end_after", "test_network_id"])
def test_test_only_fields_are_refused_for_a_live_failover(
    app: Any, client: Any, auth: Any, field: str
) -> None:
    ctx = _context(app)
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", {**LIVE, field: 60})
    assert res.status_code == 400 and res.json["error"]["field"] == field


def test_conflicts_while_a_test_starts_runs_and_ends(app: Any, client: Any, auth: Any) -> None:
    ctx = _context(app)
    # nothing to end yet
    res = _post(client, auth, f"vm-contexts/{ctx}/test-failover/end")
    assert res.status_code == 409 and res.json["error"]["field"] == "vm_context_id"
    assert "no test failover in place" in res.json["error"]["message"]

    test = _post(client, auth, f"vm-contexts/{ctx}/failover", TEST).json
    for body in (TEST, LIVE):  # while it starts, no second test and no live failover
        res = _post(client, auth, f"vm-contexts/{ctx}/failover", body)
        assert res.status_code == 409, res.json
        assert test["id"] in res.json["error"]["message"]
    # the worker's validate makes the context failed_over_test; ending waits for the start
    _set(app, test["id"], "running", "failed_over_test")
    res = _post(client, auth, f"vm-contexts/{ctx}/test-failover/end")
    assert res.status_code == 409 and "still starting" in res.json["error"]["message"]

    _set(app, test["id"], "done")
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", TEST)
    assert res.status_code == 409 and "already has a test failover in place" in res.text
    # a live failover is refused while the test is in place, naming end_test
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", LIVE)
    assert res.status_code == 409, res.json
    assert res.json["error"]["field"] == "end_test"
    assert test["id"] in res.json["error"]["message"]

    # syncs go on beside a test in place; the job keeps the context failed_over_test
    res = _post(client, auth, "replications", {"vm_context_id": ctx, "type": "incremental"})
    assert res.status_code == 202, res.json
    with app.app_context(), database.connection_context():
        assert VmContext.get_by_id(ctx).state == "failed_over_test"
        from oma.database.repos import jobs

        jobs.complete_job(res.json["id"], {"2000": "52 aa/2"})
        row = VmContext.get_by_id(ctx)
        assert (row.state, row.ready_for_failover) == ("failed_over_test", True)

    end = _post(client, auth, f"vm-contexts/{ctx}/test-failover/end", {})
    assert end.status_code == 202, end.json
    assert end.json["id"] == test["id"] and end.json["status"] == "ending"
    assert [s["name"] for s in end.json["end"]["steps"]] == [
        "remove_test_vm",
        "delete_volumes",
        "delete_snapshots",
        "finish",
    ]
    again = _post(client, auth, f"vm-contexts/{ctx}/test-failover/end")
    assert again.status_code == 409 and end.json["end"]["id"] in again.json["error"]["message"]
    bad = _post(client, auth, f"vm-contexts/{ctx}/test-failover/end", {"now": True})
    assert bad.status_code == 400 and bad.json["error"]["field"] == "now"


def test_a_live_failover_with_end_test_queues_the_end_first(
    app: Any, client: Any, auth: Any
) -> None:
    ctx = _context(app)
    test = _post(client, auth, f"vm-contexts/{ctx}/failover", TEST).json
    _set(app, test["id"], "done", "failed_over_test")
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", {**LIVE, "end_test": True})
    assert res.status_code == 202, res.json
    assert res.json["type"] == "live" and res.json["status"] == "pending"
    assert "end_test" not in res.json["params"]
    record = client.get(f"/api/v1/test-failovers/{test['id']}", headers=auth.viewer).json
    assert record["status"] == "ending" and record["end"]["id"] == res.json["test_end_id"]
    # end_test on a VM without a test in place is a plain live failover
    other = _context(app, vm="vm-2")
    res = _post(client, auth, f"vm-contexts/{other}/failover", {**LIVE, "end_test": True})
    assert res.status_code == 202 and "test_end_id" not in res.json


def test_openapi_documents_the_test_failover(client: Any, auth: Any) -> None:
    doc = client.get("/api/v1/openapi.json", headers=auth.viewer).json
    paths = doc["paths"]
    schemas = doc["components"]["schemas"]
    start = paths["/api/v1/vm-contexts/{context_id}/failover"]["post"]
    ref = start["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    members = [m["$ref"].rsplit("/", 1)[1] for m in schemas[ref.rsplit("/", 1)[1]]["oneOf"]]
    assert members == ["LiveFailover", "TestFailover"]
    test, live = schemas["TestFailover"], schemas["LiveFailover"]
    assert {"auto_end_after", "test_network_id"} <= set(test["properties"])
    assert "end_test" in live["properties"] and "end_test" not in test["properties"]
    assert test["properties"]["type"]["const"] == "test" and "type" in test["required"]
    assert "post" in paths["/api/v1/vm-contexts/{context_id}/test-failover/end"]
    assert "get" in paths["/api/v1/test-failovers/{test_id}"]
    assert "get" in paths["/api/v1/vm-contexts/{context_id}/test-failovers"]


@pytest.mark.parametrize("ending", ["failed", "stopped"])
def test_a_sync_that_fails_beside_a_test_leaves_the_test_state(
    app: Any, client: Any, auth: Any, ending: str
) -> None:
    from oma.database.repos import jobs

    ctx = _context(app, state="failed_over_test")
    with app.app_context(), database.connection_context():
        VmContext.update(last_success_at=VmContext.created_at).where(VmContext.id == ctx).execute()
        job = jobs.create_job(ctx, requested_type="incremental")
        assert VmContext.get_by_id(ctx).state == "failed_over_test"
        if ending == "failed":
            jobs.fail_job(job.id, "vma_unreachable", "gone")
        else:
            jobs.stop_job(job.id)
        row = VmContext.get_by_id(ctx)
        assert (row.state, row.active_job_id) == ("failed_over_test", None)
