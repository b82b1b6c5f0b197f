"""The bandwidth token bucket and its limit file, on an injected clock (no wall-clock time)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from migratekit._plan import parse_plan
from migratekit.copy._throttle import BURST_SECONDS, LimitFile, TokenBucket, read_limit

MiB = 1 << 20


class FakeClock:
    """Seconds that only move when a waiter waits (the wait is simulated)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, _cond: threading.Condition, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def bucket(rate: int | None, clock: FakeClock) -> TokenBucket:
    return TokenBucket(rate, clock=clock, wait=clock.wait)


def test_unlimited_never_waits() -> None:
    clock = FakeClock()
    b = bucket(None, clock)
    for _ in range(1000):
        b.take(MiB)
    assert clock.waits == [] and b.rate is None and b.delay() == 0.0


def test_limited_rate_is_exact_over_many_requests() -> None:
    clock = FakeClock()
    b = bucket(2 * MiB, clock)
    start = clock.now
    for _ in range(20):
        b.take(256 * 1024)
    # starts empty: 20 x 256 KiB at 2 MiB/s is 2.5 s of (simulated) waiting
    assert clock.now - start == pytest.approx(2.5)


def test_idle_time_saves_only_a_small_burst() -> None:
    clock = FakeClock()
    b = bucket(MiB, clock)
    clock.now += 60.0  # a minute idle
    b.take(MiB)
    assert sum(clock.waits) == pytest.approx(1.0 - BURST_SECONDS)


def test_raising_the_limit_shortens_the_wait_at_once() -> None:
    clock = FakeClock()
    b = bucket(MiB, clock)
    b._tokens = -float(MiB)  # a worker owes one request
    assert b.delay() == pytest.approx(1.0)
    b.set_rate(4 * MiB)
    assert b.delay() == pytest.approx(0.25)
    b.set_rate(MiB // 2)
    assert b.delay() == pytest.approx(2.0)


def test_lifting_the_limit_releases_waiters() -> None:
    clock = FakeClock()
    b = bucket(MiB, clock)

    def lift(cond: threading.Condition, seconds: float) -> None:
        clock.waits.append(seconds)
        b._rate = None  # what set_rate(None) does, from inside the wait

    b._wait = lift
    b.take(8 * MiB)
    assert len(clock.waits) == 1 and b.delay() == 0.0
    b.set_rate(0)
    assert b.rate is None


def test_a_stop_ends_the_wait() -> None:
    clock = FakeClock()
    b = bucket(MiB, clock)
    b.take(100 * MiB, stopping=lambda: len(clock.waits) >= 2)
    assert len(clock.waits) == 2


def test_waits_are_bounded_so_stop_and_rate_are_rechecked() -> None:
    clock = FakeClock()
    b = bucket(1024, clock)
    b.take(10 * 1024)
    assert max(clock.waits) <= 0.25 and sum(clock.waits) == pytest.approx(10.0)


def test_shared_by_threads_never_exceeds_the_rate() -> None:
    clock = FakeClock()
    lock = threading.Lock()

    def wait(cond: threading.Condition, seconds: float) -> None:
        with lock:
            clock.now += seconds
        cond.wait(0.001)  # let the other threads in

    b = TokenBucket(4 * MiB, clock=clock, wait=wait)
    start = clock.now

    def worker() -> None:
        for _ in range(4):
            b.take(MiB)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 16 MiB were handed out: at 4 MiB/s that needs at least 4 s (no burst was saved)
    assert clock.now - start >= 4.0


def test_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate must be >= 0"):
        TokenBucket(-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"limit_bps": 1048576}', MiB), ('{"limit_bps": null}', None), ('{"limit_bps": 0}', None)],
)
def test_read_limit(tmp_path: Path, text: str, expected: int | None) -> None:
    path = tmp_path / "bandwidth.json"
    path.write_text(text)
    assert read_limit(path) == expected


@pytest.mark.parametrize(
    "text", ['{"limit_bps": -5}', '{"limit_bps": "50M"}', "[]", "{}", '{"limit_bps": true}', "{"]
)
def test_read_limit_refuses_bad_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bandwidth.json"
    path.write_text(text)
    with pytest.raises(ValueError):
        read_limit(path)


def test_limit_file_applies_changes_and_keeps_the_limit_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bandwidth.json"
    b = TokenBucket(3 * MiB)
    watcher = LimitFile(path, b)
    assert watcher.poll() == 3 * MiB  # missing file: the starting limit
    path.write_text(json.dumps({"limit_bps": MiB}))
    assert watcher.poll() == MiB and b.rate == MiB
    path.write_text('{"limit_bps": ')  # damaged: the limit stays
    assert watcher.poll() == MiB and b.rate == MiB
    path.write_text(json.dumps({"limit_bps": None}))
    assert watcher.poll() is None and b.rate is None


def test_plan_bandwidth_file_resolves_against_the_plan_dir(tmp_path: Path) -> None:
    disk = {"disk_key": "2000", "source": "nbd://127.0.0.1:1/a", "target": "nbd://127.0.0.1:2/b"}
    plan = parse_plan({"disks": [disk], "bandwidth_file": "bw.json"}, base_dir=tmp_path)
    assert plan.bandwidth_file == str(tmp_path / "bw.json")
    assert parse_plan({"disks": [disk]}).bandwidth_file is None
