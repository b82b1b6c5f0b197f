"""Bandwidth policies: validation naming the field, windows in a timezone, even shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from oma.services.bandwidth import (
    PolicyError,
    effective_limits,
    parse_human_rate,
    parse_policy,
)

MiB = 1 << 20
OFFICE = {
    "timezone": "Europe/Paris",
    "windows": [{"days": ["mon-fri"], "start": "08:00", "end": "18:00", "rate_bps": 50 * MiB}],
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("when", "rate"),
    [
        ("2026-12-02T07:00:00", 50 * MiB),  # Wednesday 08:00 in Paris (UTC+1): in
        ("2026-12-02T06:59:00", None),  # 07:59 in Paris: out
        ("2026-12-02T16:59:00", 50 * MiB),  # 17:59
        ("2026-12-02T17:00:00", None),  # 18:00: the end is not part of the window
        ("2026-12-05T10:00:00", None),  # Saturday
    ],
)
def test_office_hours_window_in_its_timezone(when: str, rate: int | None) -> None:
    assert parse_policy(OFFICE).rate_at(at(when)) == rate


def test_first_matching_window_wins_else_the_default() -> None:
    policy = parse_policy(
        {
            "rate_bps": 10 * MiB,
            "windows": [
                {"days": ["wed"], "start": "12:00", "end": "13:00", "rate_bps": None},
                {"days": ["*"], "start": "00:00", "end": "24:00", "rate_bps": 1 * MiB},
            ],
        }
    )
    assert policy.rate_at(at("2026-12-02T12:30:00")) is None  # first rule: unlimited
    assert policy.rate_at(at("2026-12-02T13:00:00")) == MiB
    assert parse_policy({"rate_bps": 10 * MiB}).rate_at(at("2026-12-02T13:00:00")) == 10 * MiB


def test_day_ranges_wrap_and_round_trip() -> None:
    policy = parse_policy(
        {"windows": [{"days": ["fri-mon"], "start": "00:00", "end": "24:00", "rate_bps": 5}]}
    )
    assert policy.windows[0].to_dict()["days"] == ["mon", "fri", "sat", "sun"]
    assert parse_policy(policy.to_dict()) == policy


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"rate_bps": -1}, "rate_bps"),
        ({"rate_bps": "50MiB"}, "rate_bps"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"windows": {}}, "windows"),
        ({"windows": [{"days": ["mon"], "start": "08:00", "end": "08:00", "rate_bps": 1}]}, None),
        (
            {"windows": [{"days": ["funday"], "start": "08:00", "end": "09:00", "rate_bps": 1}]},
            None,
        ),
        ({"windows": [{"days": [], "start": "08:00", "end": "09:00", "rate_bps": 1}]}, None),
        ({"windows": [{"days": ["mon"], "start": "8am", "end": "09:00", "rate_bps": 1}]}, None),
        ({"windows": [{"days": ["mon"], "start": "08:00", "end": "09:00"}]}, None),
        ({"windows": [{"days": ["mon"], "start": "08:00", "end": "09:00", "rate_bps": -2}]}, None),
        ({"limit": 5}, "limit"),
    ],
)
def test_bad_policies_name_the_field(data: dict[str, Any], field: str | None) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(data)
    if field is not None:
        assert info.value.field == field
    else:
        assert info.value.field.startswith("windows[0].")


def test_window_field_names() -> None:
    def field_of(window: dict[str, Any]) -> str:
        with pytest.raises(PolicyError) as info:
            parse_policy({"windows": [window]})
        return info.value.field

    base = {"days": ["mon"], "start": "08:00", "end": "09:00", "rate_bps": 1}
    assert field_of({**base, "end": "07:00"}) == "windows[0].end"
    assert field_of({**base, "days": ["mon", "xyz"]}) == "windows[0].days[1]"
    assert field_of({**base, "start": "25:00"}) == "windows[0].start"
    assert field_of({**base, "rate_bps": -2}) == "windows[0].rate_bps"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("50MiB", 50 * MiB),
        ("50M", 50 * MiB),
        ("1.5G", 3 * (1 << 29)),
        ("512KiB/s", 512 * 1024),
        ("1048576", MiB),
        ("unlimited", None),
    ],
)
def test_human_rates(text: str, value: int | None) -> None:
    assert parse_human_rate(text) == value


@pytest.mark.parametrize("text", ["fast", "-5M", "50 MB per s", ""])
def test_bad_human_rates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_human_rate(text)


def test_effective_limit_is_the_smallest_share() -> None:
    now = at("2026-12-02T10:00:00")
    running = {"j1": "vma-a", "j2": "vma-a", "j3": "vma-b", "j4": "vma-b"}
    limits = effective_limits(
        now,
        running,
        global_policy=parse_policy({"rate_bps": 100 * MiB}),  # 25 MiB/s each
        vma_policies={"vma-a": parse_policy({"rate_bps": 20 * MiB})},  # 10 MiB/s each
        job_policies={"j1": parse_policy({"rate_bps": 4 * MiB})},
    )
    assert limits["j1"].effective == 4 * MiB
    assert limits["j2"].effective == 10 * MiB and limits["j2"].vma_share == 10 * MiB
    assert limits["j3"].effective == 25 * MiB and limits["j3"].vma_share is None
    unlimited = effective_limits(now, running, global_policy=None, vma_policies={}, job_policies={})
    assert {v.effective for v in unlimited.values()} == {None}


def test_policies_stored_on_every_database(any_db: str) -> None:
    from oma.database.models import BandwidthLimit, VmaAppliance
    from oma.database.repos import bandwidth as repo

    vma = VmaAppliance.create(name="vma-bw", url="http://127.0.0.1:9", token_encrypted="x")
    office = parse_policy(OFFICE)
    repo.set_policy("global", None, office)
    repo.set_policy("global", None, parse_policy({"rate_bps": MiB}))  # replaced, not added
    repo.set_policy("vma", vma.id, office)
    glob, vmas, jobs = repo.all_policies()
    assert glob == parse_policy({"rate_bps": MiB}) and vmas == {vma.id: office} and jobs == {}
    assert repo.get_policy("vma", vma.id) == office
    vma.delete_instance()  # the VMA's policy goes with it
    assert repo.get_policy("vma", vma.id) is None
    assert repo.delete_policy("global") and not repo.delete_policy("global")
    assert BandwidthLimit.select().count() == 0
