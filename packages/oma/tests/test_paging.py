"""Paged lists on every database: keyset paging by ``next_after``, the bounded count, and
the bounds on ``offset`` and ``after`` (a cursor that does not fit is a 422)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest


def _seed(app: Any, contexts: int, jobs: int) -> tuple[list[str], list[str]]:
    """``contexts`` contexts (names repeat: ties broken by id) and ``jobs`` jobs (created in
    pairs at the same instant: ties broken by id); (context ids in list order, job ids newest
    first)."""
    from oma.database import database
    from oma.database.models import ReplicationJob, VmaAppliance, VmContext

    start = datetime(2026, 1, 1, tzinfo=UTC)
    with app.app_context(), database.connection_context(), database.atomic():
        vma = VmaAppliance.create(name="vma-page", url="http://127.0.0.1:9", token_encrypted="x")
        ctx_rows = [
            {"id": str(uuid.uuid4()), "vma": vma.id, "vcenter": "vc", "vm_id": str(uuid.uuid4()),
             "name": f"vm-{n // 2:03d}", "state": "discovered"}
            for n in range(contexts)
        ]  # fmt: skip
        VmContext.insert_many(ctx_rows).execute()
        job_rows = [
            {"id": str(uuid.uuid4()), "context": ctx_rows[n % contexts]["id"], "vma": vma.id,
             "requested_type": "auto", "status": "completed",
             "created_at": start + timedelta(seconds=n // 2, microseconds=0 if n % 4 else 250)}
            for n in range(jobs)
        ]  # fmt: skip
        ReplicationJob.insert_many(job_rows).execute()
    ctx_order = [r["id"] for r in sorted(ctx_rows, key=lambda r: (r["name"], r["id"]))]
    job_order = [
        r["id"] for r in sorted(job_rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    ]
    return ctx_order, job_order


def _walk(client: Any, headers: dict[str, str], path: str, limit: int) -> list[dict[str, Any]]:
    pages, after = [], None
    while True:
        query = ("&" if "?" in path else "?") + f"limit={limit}"
        query += f"&after={after}" if after else ""
        r = client.get(path + query, headers=headers)
        assert r.status_code == 200, r.json
        pages.append(r.json)
        after = r.json["next_after"]
        if not r.json["has_more"]:
            assert after is None
            return pages
        assert after


@pytest.mark.parametrize("path", ["/api/v1/replications", "/api/v1/vm-contexts"])
def test_keyset_pages_cover_every_row_once_in_order_with_ties(
    any_app: Any, any_auth: Any, path: str
) -> None:
    client, auth = any_app.test_client(), any_auth
    ctx_order, job_order = _seed(any_app, 9, 11)
    wanted = job_order if "replications" in path else ctx_order
    pages = _walk(client, auth.viewer, path, 3)
    assert [i["id"] for p in pages for i in p["items"]] == wanted
    sizes = [3] * (len(wanted) // 3) + ([len(wanted) % 3] if len(wanted) % 3 else [])
    assert [len(p["items"]) for p in pages] == sizes
    assert all(p["total"] == len(wanted) and p["total_exact"] for p in pages)
    # offset paging agrees with keyset paging
    second = client.get(f"{path}?limit=3&offset=3", headers=auth.viewer).json
    assert [i["id"] for i in second["items"]] == wanted[3:6] and second["has_more"]


def test_a_filtered_keyset_walk_stays_within_the_filter(any_app: Any, any_auth: Any) -> None:
    client, auth = any_app.test_client(), any_auth
    ctx_order, job_order = _seed(any_app, 3, 12)
    ctx = ctx_order[0]
    pages = _walk(client, auth.viewer, f"/api/v1/replications?vm_context_id={ctx}", 2)
    ids = [i["id"] for p in pages for i in p["items"]]
    assert ids and all(i["vm_context_id"] == ctx for p in pages for i in p["items"])
    assert ids == [j for j in job_order if j in set(ids)] and len(ids) == 4


def test_the_total_is_counted_up_to_the_cap(any_app: Any, any_auth: Any, monkeypatch) -> None:
    from oma.database.repos import _documents, _select

    client, auth = any_app.test_client(), any_auth
    ctx_order, _ = _seed(any_app, 4, 16)
    _documents._statement.cache_clear()  # the cap is part of each statement's text
    monkeypatch.setattr(_documents, "COUNT_CAP", 5)
    monkeypatch.setattr(_select, "COUNT_CAP", 5)
    try:
        page = client.get("/api/v1/replications?limit=2", headers=auth.viewer).json
        assert (page["total"], page["total_exact"], page["has_more"]) == (5, False, True)
        page = client.get("/api/v1/vm-contexts?limit=2", headers=auth.viewer).json
        assert (page["total"], page["total_exact"]) == (4, True)
        last = client.get("/api/v1/replications?limit=2&offset=14", headers=auth.viewer).json
        assert len(last["items"]) == 2 and not last["has_more"] and last["next_after"] is None
        # a filter is counted with the same cap: 4 jobs of one VM exactly, 16 over the cap
        one = f"/api/v1/replications?limit=1&vm_context_id={ctx_order[0]}"
        page = client.get(one, headers=auth.viewer).json
        assert (page["total"], page["total_exact"], page["has_more"]) == (4, True, True)
        page = client.get("/api/v1/replications?limit=1&status=completed", headers=auth.viewer)
        assert (page.json["total"], page.json["total_exact"]) == (5, False)
        assert (
            client.get("/api/v1/replications?status=failed", headers=auth.viewer).json["total"] == 0
        )
    finally:
        _documents._statement.cache_clear()


def test_bad_cursors_and_deep_offsets_are_refused_naming_the_field(
    app: Any, client: Any, auth: Any
) -> None:
    from oma.api.validation import MAX_OFFSET

    _seed(app, 4, 4)
    contexts_cursor = client.get("/api/v1/vm-contexts?limit=1", headers=auth.viewer).json
    for cursor, why in (
        ("bm90LWEtY3Vyc29y", "not a next_after value"),  # base64 of plain text
        (contexts_cursor["next_after"], "created_at is not a timestamp"),  # another list's
    ):
        r = client.get(f"/api/v1/replications?after={cursor}", headers=auth.viewer)
        assert r.status_code == 422, r.json
        assert r.json["error"] == {
            "code": "unprocessable",
            "message": f"after: is not a cursor of this list ({why})",
            "field": "after",
        }
    r = client.get("/api/v1/replications?after=no%20spaces", headers=auth.viewer)
    assert r.status_code == 400 and r.json["error"]["field"] == "after"
    r = client.get(f"/api/v1/vm-contexts?offset={MAX_OFFSET + 1}", headers=auth.viewer)
    assert r.status_code == 400 and r.json["error"]["field"] == "offset"
    assert (
        client.get(f"/api/v1/vm-contexts?offset={MAX_OFFSET}", headers=auth.viewer).json["items"]
        == []
    )


def test_a_list_item_equals_the_same_row_read_alone(any_app: Any, any_auth: Any) -> None:
    """Lists are rendered as JSON by the database, details by Python: the items must be what
    the detail of the same job or VM answers, value for value (timestamps with and without
    microseconds, nulls, booleans, floats as the poller stores them, JSON columns)."""
    from oma.database import database
    from oma.database.models import ReplicationJob, VmContext, VmDisk

    client, auth = any_app.test_client(), any_auth
    ctx_order, job_order = _seed(any_app, 2, 3)
    with any_app.app_context(), database.connection_context():
        for key in ("2001", "16000", "2000"):  # by length, then text: 2000, 2001, 16000
            at = datetime(2026, 2, 3, 4, 5, 6, 7)
            VmDisk.create(context=ctx_order[0], disk_key=key, capacity_bytes=1 << 30, label=key,
                          change_id="52 aa/1", change_id_at=at)  # fmt: skip
        ReplicationJob.update(
            status="pending", wait_reason="room", verify=True, percent=12.57, phase="copying",
            started_at=datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
            throughput_bps=round(104857600.1 + 0.2, 1), eta_seconds=round(1e5 / 3, 1),
        ).where(ReplicationJob.id == job_order[0]).execute()  # fmt: skip
        ReplicationJob.update(
            status="failed", wait_reason="stale", error_message='copy "failed" \\ ü',
            finished_at=datetime(2026, 5, 6, 7, 8, 10, tzinfo=UTC),
        ).where(ReplicationJob.id == job_order[1]).execute()  # fmt: skip
        VmContext.update(
            spec={"cpus": 2, "nics": [{"id": "n1", "mac": None}]},
            failover_defaults={"boot_disk_key": "2000"}, ready_for_failover=True,
        ).where(VmContext.id == ctx_order[0]).execute()  # fmt: skip
    listed = client.get("/api/v1/replications", headers=auth.viewer).json["items"]
    for item in listed:
        alone = client.get(f"/api/v1/replications/{item['id']}", headers=auth.viewer).json
        for extra in ("disks", "verified", "resume"):
            alone.pop(extra)
        assert item == alone
    first = next(i for i in listed if i["id"] == job_order[0])
    assert (first["wait_reason"], first["verify"], first["active"]) == ("room", True, True)
    assert first["started_at"] == "2026-05-06T07:08:09.123456Z"
    listed = client.get("/api/v1/vm-contexts", headers=auth.viewer).json["items"]
    assert [d["disk_key"] for d in listed[0]["disks"]] == ["2000", "2001", "16000"]
    assert listed[0]["disks"][0]["change_id_at"] == "2026-02-03T04:05:06.000007Z"
    for item in listed:
        alone = client.get(f"/api/v1/vm-contexts/{item['id']}", headers=auth.viewer).json
        assert item == {k: v for k, v in alone.items() if k in item}
        assert set(alone) - set(item) == {
            "volumes",
            "jobs",
            "jobs_total",
            "jobs_total_exact",
            "events",
        }
        jobs = {i["id"]: i for i in client.get(
            f"/api/v1/replications?vm_context_id={item['id']}", headers=auth.viewer
        ).json["items"]}  # fmt: skip
        assert alone["jobs"] and alone["jobs"] == [jobs[j["id"]] for j in alone["jobs"]]
        none = client.get(f"/api/v1/vm-contexts/{item['id']}?jobs=0", headers=auth.viewer)
        assert none.status_code == 200, none.json
        assert (none.json["jobs"], none.json["jobs_total"]) == ([], len(alone["jobs"]))
    assert listed[0]["spec"]["nics"] == [{"id": "n1", "mac": None}]
    assert listed[0]["failover_defaults"] == {"boot_disk_key": "2000"}
    assert listed[1]["failover_defaults"] == {} and listed[1]["disks"] == []


def test_a_page_of_more_than_a_mebibyte_comes_back_whole(any_app: Any, any_auth: Any) -> None:
    """A page is one aggregate in the database; MariaDB cuts JSON_ARRAYAGG at
    group_concat_max_len (1 MiB by default), which the OMA raises for its connections."""
    from oma.database import database
    from oma.database.models import VmContext

    ctx_order, _ = _seed(any_app, 500, 0)
    with any_app.app_context(), database.connection_context():
        VmContext.update(spec={"notes": "x" * 3000}).execute()
    r = any_app.test_client().get("/api/v1/vm-contexts?limit=500", headers=any_auth.viewer)
    assert r.status_code == 200
    assert len(r.data) > 1.5 * (1 << 20)
    assert [i["id"] for i in r.json["items"]] == ctx_order
    assert all(i["spec"] == {"notes": "x" * 3000} for i in r.json["items"])


def test_vms_are_counted_by_state_up_to_the_cap(any_app: Any, monkeypatch) -> None:
    from oma.database import database
    from oma.database.models import ContextState, VmContext
    from oma.database.repos import _select, contexts

    ctx_order, _ = _seed(any_app, 5, 0)  # 5 VMs, all discovered
    monkeypatch.setattr(_select, "COUNT_CAP", 3)
    with any_app.app_context(), database.connection_context():
        VmContext.update(state="ready_for_failover").where(VmContext.id == ctx_order[0]).execute()
        assert contexts.count_by_state()["ready_for_failover"] == (1, True)
        counts = contexts.count_by_state()
    assert set(counts) == {s.value for s in ContextState}
    assert counts["discovered"] == (3, False)  # 4 VMs: past the cap of 3
    assert all(
        counts[s] == (0, True) for s in counts if s not in ("discovered", "ready_for_failover")
    )


def test_a_job_carries_its_vms_name_and_older_jobs_get_it_copied(
    any_app: Any, any_auth: Any
) -> None:
    import importlib

    from oma.database import database
    from oma.database.models import ReplicationJob
    from oma.database.repos import jobs

    client, auth = any_app.test_client(), any_auth
    ctx_order, job_order = _seed(any_app, 2, 2)  # rows inserted without a name, as before 0014
    copy = importlib.import_module("oma.database.migrations.0014_job_vm_name").copy_names
    with any_app.app_context(), database.connection_context():
        ReplicationJob.update(status="failed").execute()
        created = jobs.create_job(ctx_order[1])
        assert created.vm_name == "vm-000"  # its context's name, copied at creation
        assert ReplicationJob.get_by_id(job_order[0]).vm_name is None
    listed = client.get("/api/v1/replications", headers=auth.viewer).json["items"]
    assert {i["id"]: i["vm_name"] for i in listed} == dict.fromkeys(
        [created.id, *job_order], "vm-000"
    )  # a job without the copy shows its context's name
    detail = client.get(f"/api/v1/replications/{created.id}", headers=auth.viewer).json
    assert detail["vm_name"] == "vm-000"
    with any_app.app_context(), database.connection_context():
        copy(database.obj)
        assert {j.vm_name for j in ReplicationJob.select()} == {"vm-000"}
