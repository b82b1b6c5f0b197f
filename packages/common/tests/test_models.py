"""The progress/job contract: JSON round trips and rejection of bad values naming the field."""

from __future__ import annotations

import json

import pytest

from migration_common import (
    ContractError,
    DiskProgress,
    JobProgress,
    Phase,
    Status,
    SyncType,
    parse_disk_update,
    parse_job_progress,
)


def _update(**kw):
    base = {
        "disk_key": "2000",
        "sync_type": "full",
        "phase": "copy",
        "status": "running",
        "bytes_total": 1000,
        "bytes_done": 400,
        "bytes_written": 300,
        "bytes_zeroed": 100,
        "throughput_bps": 12.5,
        "change_id": None,
        "error": None,
        "seq": 17,
        "sent_at": "2026-11-29T12:00:00Z",
    }
    base.update(kw)
    return base


def test_disk_update_round_trips_through_json():
    update = parse_disk_update(json.dumps(_update()))
    again = parse_disk_update(update.to_json())
    assert again == update
    assert again.status is Status.RUNNING and again.phase is Phase.COPY
    assert again.to_dict()["sent_at"] == "2026-11-29T12:00:00Z"
    assert again.percent == 40.0


def test_job_progress_round_trips_through_json():
    disk = parse_disk_update(
        _update(
            status="completed", phase="done", bytes_done=1000, bytes_written=900, change_id="gen-1"
        )
    )
    job = JobProgress.aggregate("job-1", [disk], status=Status.COMPLETED)
    again = parse_job_progress(job.to_json())
    assert again == job
    assert again.percent == 100.0
    assert again.disks[0].change_id == "gen-1"


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"bytes_done": -1}, "bytes_done", "greater than or equal to 0"),
        ({"bytes_total": -5}, "bytes_total", "greater than or equal to 0"),
        ({"status": "exploded"}, "status", "running"),
        ({"phase": "teleport"}, "phase", "copy"),
        ({"sync_type": "partial"}, "sync_type", "incremental"),
        ({"disk_key": ""}, "disk_key", "at least 1"),
        ({"seq": "x"}, "seq", "integer"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_bad_disk_updates_are_rejected_naming_the_field(change, field, text):
    with pytest.raises(ContractError) as info:
        parse_disk_update(_update(**change))
    assert info.value.field == field
    assert text in str(info.value)


def test_done_greater_than_total_is_rejected():
    with pytest.raises(ContractError, match=r"bytes_done .* exceeds bytes_total"):
        parse_disk_update(_update(bytes_done=2000))


def test_written_plus_zeroed_cannot_exceed_done():
    with pytest.raises(ContractError, match="exceeds bytes_done"):
        parse_disk_update(_update(bytes_written=400, bytes_zeroed=100))


def test_failed_status_needs_an_error():
    with pytest.raises(ContractError, match="error must be set"):
        parse_disk_update(_update(status="failed"))
    assert parse_disk_update(_update(status="failed", error="boom")).error == "boom"


def test_job_rejects_unknown_status_and_bad_percent():
    with pytest.raises(ContractError) as info:
        parse_job_progress({"job_id": "j", "status": "done"})
    assert info.value.field == "status"
    with pytest.raises(ContractError) as info:
        parse_job_progress({"job_id": "j", "percent": 101})
    assert info.value.field == "percent"
    with pytest.raises(ContractError) as info:
        parse_job_progress({"job_id": "j", "disks": [_update(bytes_done=-1)]})
    assert info.value.field == "disks.0.bytes_done"


def test_aggregate_sums_disks_and_computes_eta():
    a = DiskProgress(disk_key="1", bytes_total=100, bytes_done=50, throughput_bps=10)
    b = DiskProgress(
        disk_key="2", bytes_total=300, bytes_done=50, throughput_bps=30, sync_type=SyncType.FULL
    )
    job = JobProgress.aggregate("j", [a, b], status=Status.RUNNING)
    assert (job.bytes_total, job.bytes_done, job.percent) == (400, 100, 25.0)
    assert job.throughput_bps == 40 and job.eta_seconds == pytest.approx(7.5)
    assert job.phase is Phase.COPY


def test_terminal_statuses():
    assert {s for s in Status if s.is_terminal} == {Status.COMPLETED, Status.FAILED, Status.STOPPED}
