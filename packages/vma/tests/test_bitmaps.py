"""Bitmap generations on a real qcow2 image."""

from __future__ import annotations

from labtest.nbd import create_image
from vma.sources import bitmaps


def test_generations_and_pruning(tmp_path):
    image = create_image(tmp_path / "d.qcow2", 1 << 20)
    assert bitmaps.next_generation(bitmaps.list_bitmaps(image)) == "gen-0"
    for name in ("gen-0", "gen-2", "gen-10", "keep-me"):
        bitmaps.add_bitmap(image, name)
    assert bitmaps.next_generation(bitmaps.list_bitmaps(image)) == "gen-11"
    removed = bitmaps.prune_older(image, "gen-10")
    assert sorted(removed) == ["gen-0", "gen-2"]
    assert sorted(b.name for b in bitmaps.list_bitmaps(image)) == ["gen-10", "keep-me"]
    assert bitmaps.virtual_size(image) == 1 << 20
    assert all(b.consistent for b in bitmaps.list_bitmaps(image))
