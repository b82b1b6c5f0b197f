"""The one entry point for developers and CI (run it through ``scripts/nox``).

Sessions: ``tests`` (every package's tests plus tests/e2e — the README's test command),
``demo`` (the lab migration end to end, the README's first command), ``lint`` (ruff check +
format check), ``build`` (one wheel and sdist per package into dist/,
then each wheel installed alone into a fresh virtualenv and imported), ``bench`` (benchmarks
against reference tools measured in the same run).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ["common", "migratekit", "vma", "vma_api_server", "oma"]
IMPORT_NAMES = {
    "common": "migration_common",
    "migratekit": "migratekit",
    "vma": "vma",
    "vma_api_server": "vma_api_server",
    "oma": "oma",
}
# Lab tools installed next to the packages in test environments (never released).
LAB_TOOLS = [
    p
    for p in ["tools/labtest", "tools/cloudstack_sim", "tools/demo"]
    if (ROOT / p / "pyproject.toml").exists()
]
TEST_DEPS = ["pytest>=8", "pytest-timeout>=2.3"]

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _install_workspace(session: nox.Session) -> None:
    """Install every package and lab tool editable, plus the test dependencies."""
    args: list[str] = []
    for pkg in PACKAGES:
        args += ["-e", f"packages/{pkg}"]
    for tool in LAB_TOOLS:
        args += ["-e", tool]
    session.install(*TEST_DEPS, *args)


@nox.session
def tests(session: nox.Session) -> None:
    """Run every package's tests and the end-to-end tests (pytest args pass through)."""
    _install_workspace(session)
    # Build the vCenter simulator once up front (cached), not inside a test's timeout.
    session.run("bash", "tools/vcsim/build", external=True)
    paths = [f"packages/{p}/tests" for p in PACKAGES]
    paths += [f"{tool}/tests" for tool in LAB_TOOLS] + ["tests/e2e"]
    paths = [p for p in paths if any((ROOT / p).glob("test_*.py"))]
    session.run("pytest", *(session.posargs or paths))


@nox.session
def demo(session: nox.Session) -> None:
    """The lab demo: a VM migrated end to end with live failover (``-- --keep`` leaves it up)."""
    _install_workspace(session)
    session.run("bash", "tools/vcsim/build", external=True, silent=True)
    session.run("python", "-m", "demo", *session.posargs)


@nox.session(default=False, tags=["bench"])
def bench(session: nox.Session) -> None:
    """Benchmarks: migratekit vs nbdcopy copy ratios and RSS, OMA poller tick time.

    ``scripts/nox -s bench -- migratekit`` (or ``oma_poller``) runs just one of them.
    """
    _install_workspace(session)
    wanted = set(session.posargs)
    for script in sorted((ROOT / "benchmarks").glob("*_bench.py")):
        if wanted and script.stem.removesuffix("_bench") not in wanted:
            continue
        session.log(f"benchmark: {script.name}")
        session.run("python", str(script))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def build(session: nox.Session) -> None:
    """Build a wheel and sdist per package into dist/; install each wheel alone and import it."""
    session.install("build>=1.2")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for pkg in PACKAGES:
        session.run("python", "-m", "build", "--outdir", str(dist), f"packages/{pkg}", silent=True)
    for pkg in PACKAGES:
        version = (ROOT / "packages" / pkg / "VERSION").read_text().strip()
        dist_name = "migration_common" if pkg == "common" else pkg
        wheels = list(dist.glob(f"{dist_name}-{version}-py3-none-any.whl"))
        if len(wheels) != 1:
            session.error(f"expected one wheel for {pkg} {version} in dist/, found {wheels}")
        sdists = list(dist.glob(f"{dist_name}-{version}.tar.gz"))
        if len(sdists) != 1:
            session.error(f"expected one sdist for {pkg} {version} in dist/, found {sdists}")
        _check_wheel_alone(session, pkg, wheels[0], version)


def _check_wheel_alone(session: nox.Session, pkg: str, wheel: Path, version: str) -> None:
    """Install one wheel into a fresh virtualenv (siblings from dist/ only) and import it."""
    venv = ROOT / ".nox" / "wheel-check" / pkg
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv), silent=True)
    py = str(venv / "bin" / "python")
    session.run(
        py,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--find-links",
        str(wheel.parent),
        str(wheel),
        external=True,
        silent=True,
    )
    name = IMPORT_NAMES[pkg]
    out = session.run(
        py, "-c", f"import {name}; print({name}.__version__)", external=True, silent=True
    )
    got = (out or "").strip()
    if got != version:
        session.error(f"{pkg}: installed wheel reports version {got!r}, VERSION says {version!r}")
    session.log(f"{pkg} {version}: wheel installs alone and imports")
