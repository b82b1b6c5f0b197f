"""Verification requests and canonical VM ids through the OMA's HTTP API (Flask test client,
real SQLite), and what a verified or mismatched answer of a VMA becomes (classify)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from migration_common import DiskProgress, JobProgress, Status, utcnow
from oma.database import database
from oma.database.models import JobDisk, VmContext
from oma.services.classify import Action, ErrorClass, JobView, Timeouts, decide_progress

VM_ID = "4200abcd-0000-4000-8000-0000000000ef"
VM = {
    "id": VM_ID.upper(),
    "name": "db-01",
    "disks": [{"key": "2000", "label": "Hard disk 1", "capacity_bytes": 16 << 20}],
}
SRC = "a" * 64
OTHER = "b" * 64


def _vma(client: Any, auth: Any) -> str:
    r = client.post(
        "/api/v1/vma-appliances",
        headers=auth.admin,
        json={"name": "vma-1", "url": "http://127.0.0.1:9", "token": "vma-secret-tok"},
    )
    assert r.status_code == 201, r.json
    return r.json["id"]


def _add(client: Any, auth: Any, vma_id: str, vms: list[dict[str, Any]]) -> Any:
    return client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": vma_id, "vcenter": "vc.lab", "vms": vms},
    )


def test_one_context_per_vm_whatever_the_case_of_its_id(app: Any, client: Any, auth: Any) -> None:
    vma_id = _vma(client, auth)
    r = _add(client, auth, vma_id, [VM])
    assert r.status_code == 201, r.json
    ctx = r.json["added"][0]
    assert ctx["vm_id"] == VM_ID  # stored in canonical form: a UUID in lower case
    # the same VM again, in lower case with blanks around it, then without hyphens in braces
    for spelling in (f"  {VM_ID} ", "{" + VM_ID.replace("-", "").upper() + "}"):
        r = _add(client, auth, vma_id, [{**VM, "id": spelling}])
        assert r.status_code == 201, r.json
        assert r.json["added"] == []
        assert r.json["skipped"] == [
            {
                "vm_id": VM_ID,
                "name": "db-01",
                "reason": "already managed",
                "vm_context_id": ctx["id"],
            }
        ]
    with app.app_context(), database.connection_context():
        assert [c.vm_id for c in VmContext.select()] == [VM_ID]
    # a replication request by VMware id finds the context in any case
    r = client.post(
        "/api/v1/replications", headers=auth.operator, json={"vm_id": VM_ID.upper(), "type": "full"}
    )
    assert r.status_code == 202, r.json
    assert r.json["vm_context_id"] == ctx["id"]


@pytest.mark.parametrize("bad", ["4200\nabcd", "vm-1\x00", "\x1b[31mvm-1", "vm\u200b-1"])
def test_a_vm_id_with_a_control_character_is_400_naming_the_field(
    client: Any, auth: Any, bad: str
) -> None:
    vma_id = _vma(client, auth)
    r = _add(client, auth, vma_id, [{**VM, "id": bad}])
    assert r.status_code == 400 and r.json["error"]["field"] == "vms[0].id", r.json
    assert "control character" in r.json["error"]["message"]
    r = client.post(
        "/api/v1/discovery/add",
        headers=auth.operator,
        json={"vma_id": vma_id, "vcenter": "vc.lab", "vm_ids": [VM_ID, bad]},
    )
    assert r.status_code == 400 and r.json["error"]["field"] == "vm_ids[1]", r.json
    r = client.post("/api/v1/replications", headers=auth.operator, json={"vm_id": bad})
    assert r.status_code == 400 and r.json["error"]["field"] == "vm_id", r.json


def test_verify_on_request_and_per_vm_default(app: Any, client: Any, auth: Any) -> None:
    vma_id = _vma(client, auth)
    ctx = _add(client, auth, vma_id, [VM]).json["added"][0]
    assert ctx["replication_defaults"] == {}

    def replicate(body: dict[str, Any]) -> dict[str, Any]:
        r = client.post(
            "/api/v1/replications", headers=auth.operator, json={"vm_context_id": ctx["id"], **body}
        )
        assert r.status_code == 202, r.json
        stop = client.post(f"/api/v1/replications/{r.json['id']}/stop", headers=auth.operator)
        assert stop.status_code == 200, stop.json
        return r.json

    assert replicate({})["verify"] is False
    assert replicate({"verify": True})["verify"] is True
    r = client.post(
        "/api/v1/replications",
        headers=auth.operator,
        json={"vm_context_id": ctx["id"], "verify": "yes"},
    )
    assert r.status_code == 400 and r.json["error"]["field"] == "verify"

    def patch(body: Any) -> Any:
        return client.patch(f"/api/v1/vm-contexts/{ctx['id']}", json=body, headers=auth.operator)

    for body, field in [
        ({"replication_defaults": {"verify": "true"}}, "replication_defaults.verify"),
        ({"replication_defaults": {"checksum": True}}, "replication_defaults.checksum"),
        ({"replication_defaults": True}, "replication_defaults"),
        ({}, "failover_defaults"),
    ]:
        r = patch(body)
        assert r.status_code == 400 and r.json["error"]["field"] == field, (body, r.json)
    r = patch({"replication_defaults": {"verify": True}})
    assert r.status_code == 200 and r.json["replication_defaults"] == {"verify": True}
    assert r.json["failover_defaults"] == {}
    assert replicate({})["verify"] is True  # the VM's default
    assert replicate({"verify": False})["verify"] is False  # the request wins
    # a schedule's or failover's job without its own choice takes the default too
    from oma.database.repos import jobs

    with app.app_context(), database.connection_context():
        row = jobs.create_job(ctx["id"])
        assert row.verify is True
        jobs.request_stop(row.id)
    assert patch({"replication_defaults": {"verify": None}}).json["replication_defaults"] == {}
    assert replicate({})["verify"] is False


def test_get_replication_shows_digests_and_the_verified_result(
    app: Any, client: Any, auth: Any
) -> None:
    vma_id = _vma(client, auth)
    ctx = _add(client, auth, vma_id, [VM]).json["added"][0]
    job = client.post(
        "/api/v1/replications",
        headers=auth.operator,
        json={"vm_context_id": ctx["id"], "verify": True},
    ).json
    with app.app_context(), database.connection_context():
        JobDisk.create(
            job=job["id"],
            disk_key="2000",
            status="completed",
            verified=True,
            source_sha256=SRC,
            target_sha256=SRC,
        )
    got = client.get(f"/api/v1/replications/{job['id']}", headers=auth.viewer).json
    assert got["verify"] is True and got["verified"] is True
    assert got["disks"][0] | {"updated_at": None} == got["disks"][0] | {
        "verified": True,
        "source_sha256": SRC,
        "target_sha256": SRC,
        "updated_at": None,
    }
    with app.app_context(), database.connection_context():
        JobDisk.update(verified=False, target_sha256=OTHER).execute()
    got = client.get(f"/api/v1/replications/{job['id']}", headers=auth.viewer).json
    assert got["verified"] is False and got["disks"][0]["target_sha256"] == OTHER


def test_failover_takes_verify_final_sync_live_only(client: Any, auth: Any) -> None:
    vma_id = _vma(client, auth)
    ctx = _add(client, auth, vma_id, [VM]).json["added"][0]
    url = f"/api/v1/vm-contexts/{ctx['id']}/failover"
    body = {"network_mappings": {"VM Network": "net-1"}, "service_offering_id": "so-1"}
    r = client.post(url, headers=auth.operator, json={**body, "verify_final_sync": "no"})
    assert r.status_code == 400 and r.json["error"]["field"] == "verify_final_sync", r.json
    r = client.post(
        url, headers=auth.operator, json={**body, "type": "test", "verify_final_sync": True}
    )
    assert r.status_code == 400 and r.json["error"]["field"] == "verify_final_sync", r.json


# -- what the poller makes of a VMA's answer --------------------------------------------------


def _view(verify: bool) -> JobView:
    now = utcnow()
    return JobView(
        job_id="j1",
        disk_keys=frozenset({"2000", "2001"}),
        status="running",
        phase="verify",
        bytes_done=0,
        started_at=now - timedelta(seconds=5),
        last_progress_at=now,
        vma_seen_at=now,
        verify=verify,
    )


def _disk(key: str, status: Status, verified: bool | None, target: str = SRC) -> DiskProgress:
    digests = {"source_sha256": SRC, "target_sha256": target} if verified is not None else {}
    return DiskProgress(
        disk_key=key,
        status=status,
        phase="done" if status is Status.COMPLETED else "verify",
        change_id="gen-1" if status is Status.COMPLETED else None,
        error=None if status is not Status.FAILED else f"disk {key}: verification failed",
        verified=verified,
        **digests,
    )


def test_a_mismatch_fails_the_job_as_verify_mismatch_naming_the_disk() -> None:
    progress = JobProgress.aggregate(
        "j1",
        [
            _disk("2000", Status.COMPLETED, True),
            _disk("2001", Status.FAILED, False, target=OTHER),
        ],
        status=Status.FAILED,
        error="migratekit exited with code 3",
    )
    decision = decide_progress(_view(True), progress, utcnow(), Timeouts())
    assert decision.action is Action.FAIL
    assert decision.error_class is ErrorClass.VERIFY_MISMATCH
    assert decision.message == (
        f"verification failed on disk 2001: the replica reads back sha256 {OTHER}, "
        f"the source holds sha256 {SRC}"
    )


def test_completion_of_a_verify_job_needs_every_disk_verified() -> None:
    verified = [_disk("2000", Status.COMPLETED, True), _disk("2001", Status.COMPLETED, True)]
    done = JobProgress.aggregate("j1", verified, status=Status.COMPLETED)
    assert decide_progress(_view(True), done, utcnow(), Timeouts()).action is Action.COMPLETE
    unverified = [verified[0], _disk("2001", Status.COMPLETED, None)]
    done = JobProgress.aggregate("j1", unverified, status=Status.COMPLETED)
    decision = decide_progress(_view(True), done, utcnow(), Timeouts())
    assert decision.action is Action.FAIL and decision.error_class is ErrorClass.VMA_ERROR
    assert "disk 2001 was not verified" in (decision.message or "")
    # a job that did not ask for verification completes without it
    assert decide_progress(_view(False), done, utcnow(), Timeouts()).action is Action.COMPLETE


def test_the_progress_contract_keeps_verified_and_digests_consistent() -> None:
    from migration_common import ContractError, parse_disk_update

    base = {"disk_key": "2000", "status": "running", "phase": "verify"}
    assert parse_disk_update(base).verified is None  # senders without the fields still parse
    for extra, field in [
        ({"verified": True, "source_sha256": SRC}, ""),
        ({"verified": True, "source_sha256": SRC, "target_sha256": OTHER}, ""),
        ({"verified": False, "source_sha256": SRC, "target_sha256": SRC}, ""),
        ({"source_sha256": "ABC"}, "source_sha256"),
    ]:
        with pytest.raises(ContractError) as err:
            parse_disk_update({**base, **extra})
        assert (err.value.field or "") == field, extra


def test_migration_0006_canonicalises_stored_vm_ids_without_merging_duplicates(
    app: Any, client: Any, auth: Any
) -> None:
    import importlib

    from oma.database.migrate import MIGRATIONS_DIR

    assert (MIGRATIONS_DIR / "0006_verification.py").exists()
    migration = importlib.import_module("oma.database.migrations.0006_verification")
    upper, other = VM_ID.upper(), "4200abcd-0000-4000-8000-0000000000AA"
    with app.app_context(), database.connection_context():
        for vm_id, vcenter in [
            (upper, "vc.lab"),
            (VM_ID, "vc.lab"),
            (other, "vc.lab"),
            (" vm-7 ", "vc.lab"),
        ]:
            VmContext.create(vcenter=vcenter, vm_id=vm_id, name=vm_id.strip()[:20])
        migration.canonical_context_ids(database.obj)
        assert sorted(c.vm_id for c in VmContext.select()) == sorted(
            [upper, VM_ID, other.lower(), "vm-7"]
        )
