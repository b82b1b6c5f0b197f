"""Workspace invariants: every package has the same shape and reports its VERSION; the OMA's
database drivers are extras; the release session's checks (scripts/release_checks.py) refuse
an unreleasable package and tag a releasable one, in a throwaway clone of this repository."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

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


def test_oma_database_drivers_are_optional_extras():
    meta = tomllib.loads((ROOT / "packages" / "oma" / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in meta["dependencies"]}
    assert not names & {"psycopg2", "psycopg2-binary", "psycopg", "pymysql", "mysqlclient"}
    extras = meta["optional-dependencies"]
    assert [d.split(">")[0] for d in extras["postgresql"]] == ["psycopg2-binary"]
    assert [d.split(">")[0] for d in extras["mariadb"]] == ["pymysql"]


# -- release checks, against a clone (tags are never created in this repository) -----------


@pytest.fixture(scope="module")
def release_checks() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "release_checks", ROOT / "scripts" / "release_checks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git(repo: Path, *args: str) -> str:
    res = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return res.stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    _git(repo, "config", "user.name", "Release Test")
    _git(repo, "config", "user.email", "release-test@example.invalid")
    for tag in _git(repo, "tag", "--list").split():
        _git(repo, "tag", "-d", tag)
    return repo


def _bump(repo: Path, pkg: str, version: str, *, changelog: bool) -> None:
    (repo / "packages" / pkg / "VERSION").write_text(version + "\n")
    if changelog:
        path = repo / "packages" / pkg / "CHANGELOG.md"
        text = path.read_text()
        path.write_text(text.replace("## Unreleased\n", f"## Unreleased\n\n## [{version}]\n", 1))
    _git(repo, "commit", "-q", "-am", f"{pkg} {version}")


def test_release_refuses_a_version_that_is_already_tagged(release_checks, clone):
    version = release_checks.read_version(clone, "oma")
    _git(clone, "tag", "-a", f"oma-v{version}", "-m", "earlier release")
    problems = release_checks.release_problems(clone, "oma")
    assert problems == [
        f"oma {version} is already released (tag oma-v{version}): raise packages/oma/VERSION"
    ]


def test_release_refuses_a_version_older_than_the_latest_tag(release_checks, clone):
    _git(clone, "tag", "-a", "vma-v99.0.0", "-m", "future release")
    problems = release_checks.release_problems(clone, "vma")
    version = release_checks.read_version(clone, "vma")
    assert problems == [f"packages/vma/VERSION {version} is older than the released 99.0.0"]


def test_release_refuses_without_a_changelog_entry(release_checks, clone):
    _bump(clone, "migratekit", "9.9.9", changelog=False)
    assert release_checks.release_problems(clone, "migratekit") == [
        "packages/migratekit/CHANGELOG.md has no '## [9.9.9]' entry"
    ]


def test_release_refuses_uncommitted_changes_and_unknown_packages(release_checks, clone):
    (clone / "packages" / "common" / "README.md").write_text("changed\n")
    [problem] = release_checks.release_problems(clone, "common")
    assert problem.startswith("packages/common has uncommitted changes")
    assert "README.md" in problem
    [unknown] = release_checks.release_problems(clone, "tools")
    assert unknown.startswith("unknown package 'tools': expected one of common, migratekit")


def test_release_tags_a_new_version_once(release_checks, clone):
    _git(clone, "tag", "-a", "oma-v0.0.1", "-m", "old release")
    _bump(clone, "oma", "41.0.0", changelog=True)
    assert release_checks.release_problems(clone, "oma") == []
    assert release_checks.create_tag(clone, "oma") == "oma-v41.0.0"
    assert _git(clone, "cat-file", "-t", "oma-v41.0.0") == "tag"  # annotated
    assert _git(clone, "rev-list", "-n1", "oma-v41.0.0") == _git(clone, "rev-parse", "HEAD")
    assert _git(clone, "tag", "-l", "--format=%(contents:subject)", "oma-v41.0.0") == ("oma 41.0.0")
    # the same version cannot be released twice; other packages are unaffected
    assert "already released" in release_checks.release_problems(clone, "oma")[0]
    assert "oma-v41.0.0" not in _git(ROOT, "tag", "--list")
