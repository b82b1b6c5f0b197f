"""Plan JSON validation: every problem names its field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from migratekit import UsageError, load_plan, parse_plan


def disk(**kw: Any) -> dict[str, Any]:
    base = {
        "disk_key": "2000",
        "source": "nbd://127.0.0.1:10809/disk",
        "target": "nbd://127.0.0.1:10100/vol-abc",
        "mode": "full",
        "target_is_zero": False,
        "changed_extents": None,
        "changed_extents_file": None,
        "dirty_bitmap": None,
        "change_id": "gen-3",
    }
    base.update(kw)
    return base


def test_the_documented_example_parses() -> None:
    plan = parse_plan({"job_id": "j", "max_parallel_disks": 2, "verify": False, "disks": [disk()]})
    assert plan.job_id == "j" and plan.max_parallel_disks == 2 and not plan.verify
    d = plan.disks[0]
    assert (d.disk_key, str(d.mode), d.change_id, d.target.export) == (
        "2000",
        "full",
        "gen-3",
        "vol-abc",
    )


def test_incremental_sources(tmp_path: Path) -> None:
    (tmp_path / "cbt.json").write_text(json.dumps([{"start": 0, "length": 4096}]))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps(
            {
                "job_id": "j",
                "disks": [
                    disk(disk_key="1", mode="incremental", changed_extents=[[0, 512]]),
                    disk(disk_key="2", mode="incremental", changed_extents_file="cbt.json"),
                    disk(disk_key="3", mode="incremental", dirty_bitmap="b1", change_id=None),
                ],
            }
        )
    )
    plan = load_plan(plan_file)
    assert plan.disks[0].changed_extents == [(0, 512)]
    assert plan.disks[1].changed_extents == [(0, 4096)]
    assert plan.disks[2].dirty_bitmap == "b1" and plan.disks[2].change_id is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "plan"),
        ({"disks": []}, "disks"),
        ({"disks": [disk()], "extra": 1}, "extra"),
        ({"disks": [disk()], "max_parallel_disks": 0}, "max_parallel_disks"),
        ({"disks": [disk()], "verify": "yes"}, "verify"),
        ({"disks": [disk(source="nbd:/x")]}, "disks[0].source"),
        ({"disks": [disk(target=None)]}, "disks[0].target"),
        ({"disks": [disk(disk_key="")]}, "disks[0].disk_key"),
        ({"disks": [disk(mode="delta")]}, "disks[0].mode"),
        ({"disks": [disk(mode="incremental")]}, "disks[0].mode"),
        (
            {"disks": [disk(mode="incremental", dirty_bitmap="b", changed_extents=[[0, 1]])]},
            "disks[0].mode",
        ),
        ({"disks": [disk(dirty_bitmap="b")]}, "disks[0].dirty_bitmap"),
        (
            {"disks": [disk(mode="incremental", changed_extents=[[0]])]},
            "disks[0].changed_extents[0]",
        ),
        ({"disks": [disk(), disk()]}, "disks[1].disk_key"),
        ({"disks": [disk(colour="red")]}, "disks[0].colour"),
    ],
)
def test_bad_plans_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_plan(doc)
    assert info.value.field == field


def test_unreadable_plan_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read plan"):
        load_plan(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_plan(bad)
