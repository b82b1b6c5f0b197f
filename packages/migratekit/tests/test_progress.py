"""Progress: trackers, the hub's seq and rate limit, sinks (HTTP coalescing, plain, bar)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest

from migratekit.progress import BarSink, DiskUpdate, HttpProgressSink, PlainSink, ProgressHub
from migration_common import DiskProgress, Status, parse_disk_update

from .conftest import Recorder


class ListSink:
    """Keeps every update, each validated by the contract's model as the VMA validates it."""

    def __init__(self) -> None:
        self.updates: list[DiskProgress] = []

    def offer(self, update: DiskUpdate) -> None:
        self.updates.append(DiskProgress.model_validate(update.to_dict()))

    def close(self) -> None:
        pass


def test_tracker_lifecycle_publishes_every_change_with_increasing_seq() -> None:
    sink = ListSink()
    hub = ProgressHub([sink], interval=3600)
    t = hub.tracker("2000", "full", "gen-1")
    t.start()
    t.set_total(300)
    t.add(100, zero=False)
    t.add(100, zero=True)
    t.add(100, zero=False, redo=True)  # a re-sent request is not counted twice
    hub.publish(t)
    t.set_phase("verify")
    t.add(100, zero=False)
    t.finish("completed")
    hub.close()
    ups = sink.updates
    assert [u.seq for u in ups] == [1, 2, 3, 4]
    assert [u.phase.value for u in ups] == ["copy", "copy", "verify", "done"]
    assert ups[1].bytes_done == 200 and ups[1].bytes_written == 100 and ups[1].bytes_zeroed == 100
    assert ups[-1].status is Status.COMPLETED and ups[-1].change_id == "gen-1"
    assert all(u.change_id is None for u in ups[:-1])
    assert ups[-1].bytes_done == ups[-1].bytes_total == 300


def test_unchanged_counters_are_not_republished() -> None:
    sink = ListSink()
    hub = ProgressHub([sink], interval=3600)
    t = hub.tracker("1", "incremental")
    t.start()
    hub.publish(t)
    hub.publish(t)
    assert len(sink.updates) == 1
    t.finish("failed", "disk 1: boom")
    assert sink.updates[-1].status is Status.FAILED and sink.updates[-1].error == "disk 1: boom"
    hub.close()


def test_ticker_publishes_running_disks() -> None:
    sink = ListSink()
    hub = ProgressHub([sink], interval=0.01).start()
    t = hub.tracker("1", "full")
    t.start()
    t.set_total(10)
    t.add(5, zero=False)
    from labtest.procs import wait_until

    wait_until(lambda: any(u.bytes_done == 5 for u in sink.updates), timeout=10)
    hub.close()


@pytest.fixture
def vma() -> Iterator[Recorder]:
    rec = Recorder()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def test_http_sink_coalesces_to_the_newest_update(vma: Recorder) -> None:
    gate = threading.Event()
    sink = HttpProgressSink(vma.url, "job-7", token="tok-123456")
    original = sink._post

    def slow_post(update: DiskProgress) -> None:
        gate.wait(10)
        original(update)

    sink._post = slow_post  # type: ignore[method-assign]
    for seq in range(1, 21):
        sink.offer(DiskProgress(disk_key="a", bytes_total=20, bytes_done=seq, seq=seq))
    gate.set()
    sink.offer(
        DiskProgress(
            disk_key="a",
            bytes_total=20,
            bytes_done=20,
            seq=21,
            status=Status.COMPLETED,
            phase="done",
            change_id="c",
        )
    )
    sink.close()
    seqs = [parse_disk_update(b).seq for _, _, b in vma.posts]
    assert seqs == sorted(seqs) and seqs[-1] == 21 and len(seqs) < 21
    assert {p for p, _, _ in vma.posts} == {"/api/v1/progress/job-7/update"}
    assert {a for _, a, _ in vma.posts} == {"Bearer tok-123456"}


def test_plain_and_bar_sinks_format() -> None:
    update = DiskProgress(
        disk_key="2000", bytes_total=2048, bytes_done=1024, throughput_bps=512, seq=3
    )
    out = io.StringIO()
    PlainSink(out).offer(update)
    assert out.getvalue() == (
        "progress disk=2000 phase=copy status=running done=1024 "
        "total=2048 percent=50.0 rate_bps=512 seq=3\n"
    )
    bar = io.StringIO()
    BarSink(bar).offer(update)
    assert "disk 2000" in bar.getvalue() and " 50.0% " in bar.getvalue()
    assert "1.0 KiB/2.0 KiB" in bar.getvalue()


def test_an_update_is_the_contracts_json_without_pydantic() -> None:
    failed = DiskUpdate(
        "2000",
        "incremental",
        "copy",
        "failed",
        10,
        4,
        3,
        1,
        2.5,
        None,
        "nbd: \x1b[31mboom\x1b[0m\n",
        7,
        limit_bps=1000,
    )
    verified = DiskUpdate(
        "2001",
        "full",
        "done",
        "completed",
        8,
        8,
        8,
        0,
        1.0,
        "gen-2",
        None,
        3,
        verified=True,
        source_sha256="a" * 64,
        target_sha256="a" * 64,
    )
    for update in (failed, verified, DiskUpdate("2002")):
        doc = update.to_dict()
        model = DiskProgress.model_validate(doc)
        assert model.to_dict() == doc  # the same JSON, value for value
        assert model.percent == update.percent
    # control characters replaced, as the model does
    assert failed.to_dict()["error"] == "nbd: ?[31mboom?[0m\n"
    assert DiskUpdate("x", bytes_total=0, status="completed").percent == 100.0
