"""The public surface of migration_common is exactly __all__, sorted, and the version matches."""

from __future__ import annotations

from pathlib import Path

import migration_common


def test_all_is_sorted_and_complete():
    public = {n for n in dir(migration_common) if not n.startswith("_")}
    public -= {"annotations"}
    assert migration_common.__all__ == sorted(migration_common.__all__)
    assert set(migration_common.__all__) == public


def test_version_comes_from_version_file():
    version = (Path(__file__).parents[1] / "VERSION").read_text().strip()
    assert migration_common.__version__ == version


def test_no_framework_imports():
    src = Path(migration_common.__file__).parent
    text = "\n".join(p.read_text() for p in src.glob("*.py"))
    for banned in ("import flask", "import peewee", "import apscheduler"):
        assert banned not in text
