"""Checks and tagging of a one-package release (used by ``nox -s release -- PACKAGE``).

Only the standard library and ``git``, so tests can run it against a throwaway clone. A release
of ``PACKAGE`` is refused unless its ``VERSION`` is newer than every ``PACKAGE-v*`` tag, its
``CHANGELOG.md`` has a ``## [VERSION]`` entry and the package's files are committed; the tag
``PACKAGE-vVERSION`` is annotated and created locally only (never pushed).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

PACKAGES = ("common", "migratekit", "vma", "vma_api_server", "oma")
VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def tag_name(package: str, version: str) -> str:
    """The release tag of ``package`` at ``version``: ``PACKAGE-vVERSION``."""
    return f"{package}-v{version}"


def read_version(root: Path, package: str) -> str:
    """The package's VERSION file, stripped."""
    return (root / "packages" / package / "VERSION").read_text(encoding="utf-8").strip()


def _git(root: Path, *args: str) -> str:
    res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def released_versions(root: Path, package: str) -> list[str]:
    """Versions of ``package`` that already have a ``PACKAGE-vX.Y.Z`` tag."""
    prefix = tag_name(package, "")
    tags = _git(root, "tag", "--list", f"{prefix}*").split()
    return [t.removeprefix(prefix) for t in tags if VERSION_RE.fullmatch(t.removeprefix(prefix))]


def _key(version: str) -> tuple[int, int, int]:
    major, minor, patch = VERSION_RE.fullmatch(version).groups()  # type: ignore[union-attr]
    return int(major), int(minor), int(patch)


def release_problems(root: Path, package: str) -> list[str]:
    """Why ``package`` cannot be released from ``root`` now (empty: it can)."""
    if package not in PACKAGES:
        return [f"unknown package {package!r}: expected one of {', '.join(PACKAGES)}"]
    version = read_version(root, package)
    if not VERSION_RE.fullmatch(version):
        return [f"packages/{package}/VERSION is {version!r}, expected MAJOR.MINOR.PATCH"]
    problems = []
    released = released_versions(root, package)
    if version in released:
        problems.append(
            f"{package} {version} is already released (tag {tag_name(package, version)}): "
            f"raise packages/{package}/VERSION"
        )
    elif released and _key(version) < max(map(_key, released)):
        latest = max(released, key=_key)
        problems.append(f"packages/{package}/VERSION {version} is older than the released {latest}")
    changelog = (root / "packages" / package / "CHANGELOG.md").read_text(encoding="utf-8")
    if not re.search(rf"^## \[{re.escape(version)}\]", changelog, re.MULTILINE):
        problems.append(f"packages/{package}/CHANGELOG.md has no '## [{version}]' entry")
    dirty = _git(root, "status", "--porcelain", "--", f"packages/{package}").strip()
    if dirty:
        problems.append(f"packages/{package} has uncommitted changes (commit them first):\n{dirty}")
    return problems


def create_tag(root: Path, package: str) -> str:
    """Create the annotated tag ``PACKAGE-vVERSION`` on HEAD (local only); return its name."""
    version = read_version(root, package)
    name = tag_name(package, version)
    _git(root, "tag", "-a", name, "-m", f"{package} {version}")
    return name
