"""Workspace invariants: every package has the same shape and reports its VERSION."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "common": ("migration_common", "migration-common"),
    "migratekit": ("migratekit", "migratekit"),
    "vma": ("vma", "vma"),
    "vma_api_server": ("vma_api_server", "vma-api-server"),
    "oma": ("oma", "oma"),
}
SHAPE = {"pyproject.toml", "VERSION", "README.md", "CHANGELOG.md", "src", "tests"}


@pytest.mark.parametrize("pkg", sorted(PACKAGES))
def test_package_shape(pkg):
    entries = {
        p.name
        for p in (ROOT / "packages" / pkg).iterdir()
        if not p.name.startswith(".") and p.name != "__pycache__"
    }
    assert entries == SHAPE


@pytest.mark.parametrize("pkg", sorted(PACKAGES))
def test_version_is_semver_and_reported(pkg):
    import_name, dist = PACKAGES[pkg]
    version = (ROOT / "packages" / pkg / "VERSION").read_text().strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert importlib.import_module(import_name).__version__ == version
    meta = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())
    assert meta["project"]["name"] == dist
    assert f"## [{version}]" in (ROOT / "packages" / pkg / "CHANGELOG.md").read_text()


@pytest.mark.parametrize("pkg", sorted(PACKAGES))
def test_siblings_are_lower_bounds_only(pkg):
    meta = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())
    siblings = {dist for _, dist in PACKAGES.values()}
    for dep in meta["project"].get("dependencies", []):
        name = re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0]
        if name in siblings:
            assert "==" not in dep, dep


def test_no_hard_coded_versions():
    for path in (ROOT / "packages").glob("*/src/**/*.py"):
        assert '__version__ = "' not in path.read_text(), path
