"""Extent planning helpers (pure functions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migratekit import UsageError
from migratekit.copy import _extents as ext


def test_merge_ranges_sorts_and_joins_touching_and_overlapping() -> None:
    assert ext.merge_ranges([(100, 10), (0, 10), (10, 5), (104, 20), (50, 0)]) == [
        (0, 15),
        (100, 24),
    ]


def test_intersect_cuts_extents_at_range_edges() -> None:
    extents = [(0, 100, False), (100, 100, True), (200, 100, False)]
    assert ext.intersect([(50, 100), (250, 10)], extents) == [
        (50, 50, False),
        (100, 50, True),
        (250, 10, False),
    ]


def test_coalesce_joins_small_zero_gaps_between_data_only() -> None:
    extents = [(0, 10, False), (10, 4, True), (14, 10, False), (24, 100, True), (124, 1, False)]
    assert ext.coalesce(extents, gap=4) == [(0, 24, False), (24, 100, True), (124, 1, False)]
    # a gap between non-touching extents (two changed ranges) is never bridged
    apart = [(0, 10, False), (20, 4, True), (24, 10, False), (40, 5, False)]
    assert ext.coalesce(apart, gap=64) == [
        (0, 10, False),
        (20, 4, True),
        (24, 10, False),
        (40, 5, False),
    ]


def test_split_respects_request_and_zero_sizes() -> None:
    chunks = list(ext.split([(0, 10, False), (10, 25, True)], request_size=4, zero_step=20))
    assert chunks == [(0, 4, False), (4, 4, False), (8, 2, False), (10, 20, True), (30, 5, True)]


def test_parse_extent_list_accepts_pairs_objects_and_vmware_shape() -> None:
    assert ext.parse_extent_list([[0, 512], {"start": 4096, "length": 8192}]) == [
        (0, 512),
        (4096, 8192),
    ]
    assert ext.parse_extent_list({"changedArea": [{"start": 1, "length": 2}]}) == [(1, 2)]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"x": 1}, "changed_extents"),
        ([[1]], "changed_extents[0]"),
        ([[0, -1]], "changed_extents[0]"),
        ([{"start": "0", "length": 1}], "changed_extents[0]"),
        ([[0, True]], "changed_extents[0]"),
    ],
)
def test_bad_extent_lists_name_the_item(data: object, field: str) -> None:
    with pytest.raises(UsageError) as info:
        ext.parse_extent_list(data)
    assert info.value.field == field


def test_load_extent_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        ext.load_extent_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[[0, 1]")
    with pytest.raises(UsageError, match="not JSON"):
        ext.load_extent_file(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps([[0, 1]]))
    assert ext.load_extent_file(good) == [(0, 1)]


def test_extent_list_merges_and_stays_compact() -> None:
    el = ext.ExtentList()
    for i in range(100_000):
        el.append(i * 8192, 4096, zero=False)
        el.append(i * 8192 + 4096, 4096, zero=True)
    el.append(100_000 * 8192, 4096, zero=True)  # continues the last zero run: merged
    assert len(el) == 200_000
    assert el[-1] == (100_000 * 8192 - 4096, 8192, True)
    assert el[0] == (0, 4096, False)
    assert el._a.itemsize * len(el._a) == 16 * len(el)
    assert ext.ExtentList([(0, 1, False), (1, 1, False), (2, 1, True)]) == [
        (0, 2, False),
        (2, 1, True),
    ]
