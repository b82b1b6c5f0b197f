"""The failover endpoints through the Flask test client: 202 records, validation, conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from oma.api.serialize import job_document
from oma.database import database
from oma.database.models import Workflow, WorkflowStep
from oma.database.repos import contexts, jobs

BODY = {
    "type": "live",
    "network_mappings": {"VM Network": "net-1"},
    "service_offering_id": "so-1",
    "keep_macs": True,
    "graceful_timeout_s": 120,
    "force": True,
}


def _context(app: Any, *, ready: bool = True, spec: dict | None = None) -> str:
    with app.app_context(), database.connection_context():
        ctx = contexts.create_context(
            vcenter="vc.lab",
            vm_id="vm-1",
            name="web-1",
            spec=spec,
            disks=[{"disk_key": "2000", "capacity_bytes": 1 << 20}],
        )
        if ready:
            contexts.set_state(ctx.id, "ready_for_failover", ready_for_failover=True)
        return ctx.id


def _post(client: Any, auth: Any, path: str, body: Any = None, role: str = "operator") -> Any:
    return client.post(f"/api/v1/{path}", json=body, headers=auth.headers(role))


def test_start_failover_is_202_with_its_steps(app: Any, client: Any, auth: Any) -> None:
    ctx = _context(app)
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY)
    assert res.status_code == 202, res.json
    body = res.json
    assert body["status"] == "pending" and body["vm_context_id"] == ctx
    assert body["resumed"] is False
    assert res.headers["Location"].endswith(f"/api/v1/failovers/{body['id']}")
    assert [s["name"] for s in body["steps"]] == [
        "validate",
        "power_off_source",
        "final_sync",
        "detach_replicas",
        "snapshot_replicas",
        "guest_conversion",
        "deploy_target",
        "start_target",
        "finalize",
    ]
    assert {s["status"] for s in body["steps"]} == {"pending"}
    assert body["params"]["graceful_timeout_s"] == 120
    assert body["params"]["template_id"] is None

    got = client.get(f"/api/v1/failovers/{body['id']}", headers=auth.viewer)
    assert got.status_code == 200 and got.json["id"] == body["id"]
    listed = client.get(f"/api/v1/vm-contexts/{ctx}/failovers", headers=auth.viewer)
    assert [f["id"] for f in listed.json["items"]] == [body["id"]]

    # one active failover per VM
    again = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY)
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"
    # nothing to retry or roll back while it runs
    assert _post(client, auth, f"failovers/{body['id']}/retry").status_code == 409
    assert _post(client, auth, f"failovers/{body['id']}/rollback").status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "rehearsal"}, "type"),
        ({"network_mappings": {}}, "network_mappings"),
        ({"network_mappings": ["net-1"]}, "network_mappings"),
        ({"network_mappings": {"VM Network": ""}}, "network_mappings.VM Network"),
        ({"service_offering_id": None}, "service_offering_id"),
        ({"graceful_timeout_s": -1}, "graceful_timeout_s"),
        ({"graceful_timeout_s": "300"}, "graceful_timeout_s"),
        ({"keep_macs": "yes"}, "keep_macs"),
        ({"force": 1}, "force"),
        ({"vm_name": "web 1"}, "vm_name"),
        ({"vm_name": "1web"}, "vm_name"),  # CloudStack: a host name starts with a letter
        ({"vm_name": "web-"}, "vm_name"),
        ({"flavour": "x"}, "flavour"),
    ],
)
def test_bad_requests_name_the_field(
    app: Any, client: Any, auth: Any, change: dict, field: str
) -> None:
    ctx = _context(app)
    body = {**BODY, **change}
    body = {k: v for k, v in body.items() if v is not None}
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", body)
    assert res.status_code == 400, res.json
    assert res.json["error"]["field"] == field


def test_two_nics_on_one_network_and_an_unknown_boot_disk_are_refused_at_request_time(
    app: Any, client: Any, auth: Any
) -> None:
    nics = [
        {"label": "Network adapter 1", "network": "VM Network", "mac": "00:50:56:aa:00:01"},
        {"label": "Network adapter 2", "network": "Backend", "mac": "00:50:56:aa:00:02"},
    ]
    ctx = _context(app, spec={"nics": nics})
    body = {**BODY, "network_mappings": {"VM Network": "net-1", "Backend": "net-1"}}
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", body)
    assert res.status_code == 422, res.json  # fits the schema; the VM's NICs refuse it
    error = res.json["error"]
    assert error["field"] == "network_mappings"
    assert "NIC 1 'Network adapter 1' MAC 00:50:56:aa:00:01" in error["message"]
    assert "NIC 2 'Network adapter 2' MAC 00:50:56:aa:00:02" in error["message"]
    assert "both mapped to network net-1" in error["message"]

    res = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY)  # "Backend" unmapped
    assert res.status_code == 422 and res.json["error"]["field"] == "network_mappings"
    assert "source network 'Backend' of NIC 2" in res.json["error"]["message"]
    mapped = {"VM Network": "net-1", "Backend": "net-2"}
    res = _post(
        client,
        auth,
        f"vm-contexts/{ctx}/failover",
        {**BODY, "network_mappings": mapped, "boot_disk_key": "2001"},
    )
    assert res.status_code == 422 and res.json["error"]["field"] == "boot_disk_key"
    assert "boot_disk_key 2001 is not a disk of this VM (2000)" in res.json["error"]["message"]
    with app.app_context(), database.connection_context():
        assert Workflow.select().count() == 0  # nothing was started
    ok = _post(client, auth, f"vm-contexts/{ctx}/failover", {**BODY, "network_mappings": mapped})
    assert ok.status_code == 202, ok.json


def test_state_rules(app: Any, client: Any, auth: Any) -> None:
    res = _post(client, auth, "vm-contexts/nope/failover", BODY)
    assert res.status_code == 404 and res.json["error"]["code"] == "not_found"
    assert client.get("/api/v1/failovers/nope", headers=auth.viewer).status_code == 404

    ctx = _context(app, ready=False)
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY)
    assert res.status_code == 409 and "not ready_for_failover" in res.json["error"]["message"]

    with app.app_context(), database.connection_context():
        contexts.set_state(ctx, "ready_for_failover", ready_for_failover=True)
        job = jobs.create_job(ctx)
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY)
    assert res.status_code == 409 and job.id in res.json["error"]["message"]

    # viewers may not start one
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY, role="viewer")
    assert res.status_code == 403


def test_failed_failover_is_resumed_and_rolled_back(app: Any, client: Any, auth: Any) -> None:
    ctx = _context(app)
    first = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY).json
    with app.app_context(), database.connection_context():
        # what the worker leaves behind when deploy_target fails
        for name in ("validate", "power_off_source", "final_sync"):
            WorkflowStep.update(status="done").where(
                WorkflowStep.workflow == first["id"], WorkflowStep.name == name
            ).execute()
        WorkflowStep.update(status="failed", error="CloudStack error 530: boom").where(
            WorkflowStep.workflow == first["id"], WorkflowStep.name == "guest_conversion"
        ).execute()
        Workflow.update(status="failed", error="guest_conversion: boom").where(
            Workflow.id == first["id"]
        ).execute()
    failed = client.get(f"/api/v1/failovers/{first['id']}", headers=auth.viewer).json
    assert failed["status"] == "failed" and failed["error"] == "guest_conversion: boom"
    step = {s["name"]: s for s in failed["steps"]}["guest_conversion"]
    assert step["status"] == "failed" and "530" in step["error"]

    retried = _post(client, auth, f"failovers/{first['id']}/retry")
    assert retried.status_code == 202 and retried.json["resumed"] is True
    steps = {s["name"]: s["status"] for s in retried.json["steps"]}
    assert steps["validate"] == "pending" and steps["power_off_source"] == "done"
    assert steps["guest_conversion"] == "pending"

    with app.app_context(), database.connection_context():
        Workflow.update(status="failed").where(Workflow.id == first["id"]).execute()
    again = _post(client, auth, f"vm-contexts/{ctx}/failover", {**BODY, "vm_name": "web-new"})
    assert again.status_code == 202 and again.json["id"] == first["id"]
    assert again.json["params"]["vm_name"] == "web-new"

    with app.app_context(), database.connection_context():
        Workflow.update(status="failed").where(Workflow.id == first["id"]).execute()
    rb = _post(client, auth, f"failovers/{first['id']}/rollback")
    assert rb.status_code == 202, rb.json
    assert rb.json["status"] == "rolling_back"
    assert [s["name"] for s in rb.json["rollback"]["steps"]] == [
        "remove_target",
        "revert_replicas",
        "power_on_source",
        "delete_snapshots",
        "finish",
    ]
    # while the rollback runs, no new failover
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY)
    assert res.status_code == 409
    bad = _post(client, auth, f"failovers/{first['id']}/rollback", {"force": True})
    assert bad.status_code == 400 and bad.json["error"]["field"] == "force"


def test_openapi_documents_the_failover_endpoints(client: Any, auth: Any) -> None:
    paths = client.get("/api/v1/openapi.json", headers=auth.viewer).json["paths"]
    assert "post" in paths["/api/v1/vm-contexts/{context_id}/failover"]
    assert "get" in paths["/api/v1/vm-contexts/{context_id}/failovers"]
    assert "get" in paths["/api/v1/failovers/{failover_id}"]
    assert "post" in paths["/api/v1/failovers/{failover_id}/rollback"]
    assert "post" in paths["/api/v1/failovers/{failover_id}/retry"]


def _with_vma_and_replica(app: Any, ctx: str) -> None:
    from oma.database.models import ReplicaVolume, VmaAppliance, VmContext, VmDisk

    with app.app_context(), database.connection_context():
        vma = VmaAppliance.create(name="vma-1", url="http://127.0.0.1:9", token_encrypted="x")
        VmContext.update(vma=vma.id).where(VmContext.id == ctx).execute()
        VmDisk.update(change_id="52 aa/1").where(VmDisk.context == ctx).execute()
        ReplicaVolume.create(
            context=ctx,
            disk_key="2000",
            size_bytes=1 << 20,
            cloudstack_volume_id="cs-vol-1",
            state="attached",
        )


def _set_workflow(app: Any, wf_id: str, status: str, context_state: str | None = None) -> None:
    with app.app_context(), database.connection_context():
        Workflow.update(status=status).where(Workflow.id == wf_id).execute()
        wf = Workflow.get_by_id(wf_id)
        if context_state:
            contexts.set_state(wf.context_id, context_state)


def test_no_cleanup_or_delete_during_a_failover_or_while_failed_over(
    app: Any, client: Any, auth: Any
) -> None:
    ctx = _context(app)
    _with_vma_and_replica(app, ctx)
    fo = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY).json

    # a cleanup between detach_replicas and deploy_target would delete the failed-over disks
    for res in (
        _post(client, auth, f"vm-contexts/{ctx}/cleanup"),
        client.delete(f"/api/v1/vm-contexts/{ctx}", headers=auth.operator),
    ):
        assert res.status_code == 409, res.json
        assert res.json["error"]["code"] == "conflict"
        assert f"active failover ({fo['id']})" in res.json["error"]["message"]

    _set_workflow(app, fo["id"], "done", "failed_over_live")
    for res in (
        _post(client, auth, f"vm-contexts/{ctx}/cleanup"),
        client.delete(f"/api/v1/vm-contexts/{ctx}", headers=auth.operator),
    ):
        assert res.status_code == 409, res.json
        assert res.json["error"]["code"] == "invalid_state"
        assert "roll the failover back first" in res.json["error"]["message"]

    rb = _post(client, auth, f"failovers/{fo['id']}/rollback").json
    _set_workflow(app, fo["id"], "done", "ready_for_failover")  # the rollback is still active
    res = _post(client, auth, f"vm-contexts/{ctx}/cleanup")
    assert res.status_code == 409 and "active rollback" in res.json["error"]["message"]

    _set_workflow(app, rb["rollback"]["id"], "done")
    with app.app_context(), database.connection_context():
        assert Workflow.select().where(Workflow.kind == "cleanup").count() == 0
    res = _post(client, auth, f"vm-contexts/{ctx}/cleanup")
    assert res.status_code == 202 and res.json["kind"] == "cleanup"
    # and no failover starts while that cleanup is queued
    assert _post(client, auth, f"vm-contexts/{ctx}/failover", BODY).status_code == 409


def test_delete_without_replicas_is_refused_during_a_failover(
    app: Any, client: Any, auth: Any
) -> None:
    ctx = _context(app)
    fo = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY).json
    res = client.delete(f"/api/v1/vm-contexts/{ctx}", headers=auth.operator)
    assert res.status_code == 409 and fo["id"] in res.json["error"]["message"]
    _set_workflow(app, fo["id"], "failed")
    assert client.delete(f"/api/v1/vm-contexts/{ctx}", headers=auth.operator).status_code == 204


def test_no_replication_request_during_a_failover_or_rollback(
    app: Any, client: Any, auth: Any
) -> None:
    ctx = _context(app)
    _with_vma_and_replica(app, ctx)
    fo = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY).json
    res = _post(client, auth, "replications", {"vm_context_id": ctx, "type": "incremental"})
    assert res.status_code == 409, res.json
    assert res.json["error"]["code"] == "conflict"
    assert res.json["error"]["field"] == "vm_context_id"
    assert f"active failover ({fo['id']})" in res.json["error"]["message"]
    with app.app_context(), database.connection_context():
        assert jobs.list_jobs(job_document(), context_id=ctx).total == 0
        # the failover's own final sync goes through the repository and still works
        final = jobs.create_job(ctx, requested_type="incremental")
        jobs.stop_job(final.id)

    _set_workflow(app, fo["id"], "failed")
    rb = _post(client, auth, f"failovers/{fo['id']}/rollback")
    assert rb.status_code == 202
    res = _post(client, auth, "replications", {"vm_context_id": ctx})
    assert res.status_code == 409 and "active rollback" in res.json["error"]["message"]

    _set_workflow(app, rb.json["rollback"]["id"], "done", "ready_for_failover")
    cleanup = _post(client, auth, f"vm-contexts/{ctx}/cleanup").json
    res = _post(client, auth, "replications", {"vm_context_id": ctx})  # volumes being deleted
    assert res.status_code == 409 and f"active cleanup ({cleanup['id']})" in res.text
    _set_workflow(app, cleanup["id"], "done")
    res = _post(client, auth, "replications", {"vm_context_id": ctx})
    assert res.status_code == 202, res.json


def test_locked_checks_on_every_database(any_app: Any) -> None:
    from oma.database.repos import tokens

    with any_app.app_context(), database.connection_context():
        _, token = tokens.create_token("locks", "operator")
    headers = {"Authorization": f"Bearer {token}"}
    client = any_app.test_client()
    ctx = _context(any_app)
    _with_vma_and_replica(any_app, ctx)

    def post(path: str, body: Any = None) -> Any:
        return client.post(f"/api/v1/{path}", json=body, headers=headers)

    fo = post(f"vm-contexts/{ctx}/failover", BODY)
    assert fo.status_code == 202, fo.json
    assert post("replications", {"vm_context_id": ctx}).status_code == 409
    assert post(f"vm-contexts/{ctx}/cleanup").status_code == 409
    _set_workflow(any_app, fo.json["id"], "failed")
    first = post("replications", {"vm_context_id": ctx})
    assert first.status_code == 202, first.json
    second = post("replications", {"vm_context_id": ctx})
    assert second.status_code == 409 and second.json["error"]["code"] == "conflict"
    assert post(f"vm-contexts/{ctx}/cleanup").status_code == 409  # the job is active
    assert post(f"vm-contexts/{ctx}/failover", BODY).status_code == 409


def test_template_check_is_left_to_validate_when_cloudstack_does_not_answer(
    app: Any, client: Any, auth: Any
) -> None:
    from labtest.procs import free_port

    target = {
        "name": "down",
        "endpoint": f"http://127.0.0.1:{free_port()}/client/api",  # nothing listens
        "api_key": "k",
        "secret_key": "s",
        "zone_id": "zone-1",
        "oma_vm_id": "oma-vm",
        "is_default": True,
    }
    res = client.post("/api/v1/cloudstack-targets", json=target, headers=auth.admin)
    assert res.status_code == 201, res.json
    ctx = _context(app, spec={"guest_os": "solaris11_64Guest"})
    res = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY)
    assert res.status_code == 202, res.json


def test_per_vm_failover_defaults_fill_the_request(app: Any, client: Any, auth: Any) -> None:
    ctx = _context(app)
    with app.app_context(), database.connection_context():
        contexts.upsert_disks(ctx, [{"disk_key": "2001", "capacity_bytes": 1 << 20}])

    def patch(body: Any, role: str = "operator") -> Any:
        return client.patch(f"/api/v1/vm-contexts/{ctx}", json=body, headers=auth.headers(role))

    assert patch({"failover_defaults": {"boot_disk_key": "2001"}}, "viewer").status_code == 403
    res = patch({"failover_defaults": {"boot_disk_key": "9999"}})  # fits the schema
    assert (res.status_code, res.json["error"]["field"]) == (422, "failover_defaults.boot_disk_key")
    for body, field in [
        ({"failover_defaults": {"bootdisk": "2001"}}, "failover_defaults.bootdisk"),
        ({"failover_defaults": {"template_id": 7}}, "failover_defaults.template_id"),
        ({"failover_defaults": "2001"}, "failover_defaults"),
        ({"defaults": {}}, "defaults"),
    ]:
        res = patch(body)
        assert res.status_code == 400 and res.json["error"]["field"] == field, (body, res.json)
    res = patch({"failover_defaults": {"boot_disk_key": "2001", "template_id": "tpl-9"}})
    assert res.status_code == 200, res.json
    assert res.json["failover_defaults"] == {"boot_disk_key": "2001", "template_id": "tpl-9"}
    got = client.get(f"/api/v1/vm-contexts/{ctx}", headers=auth.viewer).json
    assert got["failover_defaults"] == {"boot_disk_key": "2001", "template_id": "tpl-9"}

    started = _post(client, auth, f"vm-contexts/{ctx}/failover", BODY)
    assert started.status_code == 202, started.json
    assert started.json["params"]["boot_disk_key"] == "2001"
    assert started.json["params"]["template_id"] == "tpl-9"
    # a null removes one default; the request's own value always wins
    res = patch({"failover_defaults": {"template_id": None}})
    assert res.json["failover_defaults"] == {"boot_disk_key": "2001"}


def test_no_cleanup_while_a_test_failover_is_in_place(app: Any, client: Any, auth: Any) -> None:
    ctx = _context(app)
    _with_vma_and_replica(app, ctx)
    with app.app_context(), database.connection_context():
        contexts.set_state(ctx, "failed_over_test")
    for res in (
        _post(client, auth, f"vm-contexts/{ctx}/cleanup"),
        client.delete(f"/api/v1/vm-contexts/{ctx}", headers=auth.operator),
    ):
        assert res.status_code == 409, res.json
        assert res.json["error"]["code"] == "invalid_state"
        assert "end the test failover first" in res.json["error"]["message"]
