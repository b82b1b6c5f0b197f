"""The one entry point for developers and CI (run it through ``scripts/nox``).

Sessions: ``tests`` (every package's tests plus tests/e2e — the README's test command),
``demo`` (the lab migration end to end, the README's first command), ``lint`` (ruff check +
format check), ``build`` (one wheel and sdist per package into dist/,
then each wheel installed alone into a fresh virtualenv and imported), ``release`` (``--
PACKAGE``: checks VERSION and CHANGELOG, builds that package alone, tags ``PACKAGE-vVERSION``
locally), ``bench`` (benchmarks against reference tools measured in the same run).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "scripts"))
import release_checks  # noqa: E402 - scripts/release_checks.py, plain stdlib + git

PACKAGES = list(release_checks.PACKAGES)
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
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "playwright>=1.50",  # drives Debian's chromium (no browser download)
    "schemathesis>=4.0",
]
# Optional extras installed in test environments (the database tests need both drivers).
EXTRAS = {"oma": "[postgresql,mariadb]"}

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _install_workspace(session: nox.Session) -> None:
    """Install every package and lab tool editable, plus the test dependencies."""
    args: list[str] = []
    for pkg in PACKAGES:
        args += ["-e", f"packages/{pkg}{EXTRAS.get(pkg, '')}"]
    for tool in LAB_TOOLS:
        args += ["-e", tool]
    session.install(*TEST_DEPS, *args)
    # Editable sources get no bytecode from pip, and with PYTHONDONTWRITEBYTECODE set every
    # process the tests start (oma, gunicorn, migratekit...) would compile them again.
    sources = [f"packages/{pkg}/src" for pkg in PACKAGES] + [f"{t}/src" for t in LAB_TOOLS]
    session.run("python", "-m", "compileall", "-q", *sources)


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
    # The packages' build backend, installed once: building without an isolated environment
    # per package keeps this session short enough for CI (the release session isolates).
    session.install("build>=1.2", "hatchling>=1.24")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    wheels = {pkg: _build_package(session, pkg, dist, isolated=False) for pkg in PACKAGES}
    for pkg in PACKAGES:
        _check_wheel_alone(session, pkg, wheels[pkg], release_checks.read_version(ROOT, pkg))


@nox.session(default=False)
def release(session: nox.Session) -> None:
    """Release one package: ``-- PACKAGE``; refuses unless its VERSION is new and in CHANGELOG.

    Builds only that package's wheel and sdist into dist/ and creates the annotated tag
    ``PACKAGE-vVERSION`` locally (push it yourself).
    """
    if len(session.posargs) != 1:
        session.error(f"usage: scripts/nox -s release -- PACKAGE (one of {', '.join(PACKAGES)})")
    pkg = session.posargs[0]
    problems = release_checks.release_problems(ROOT, pkg)
    if problems:
        session.error(f"release of {pkg} refused:\n- " + "\n- ".join(problems))
    session.install("build>=1.2")
    _build_package(session, pkg, ROOT / "dist")
    tag = release_checks.create_tag(ROOT, pkg)
    session.log(f"tagged {tag} locally; publish with `git push origin {tag}` and dist/")


def _build_package(session: nox.Session, pkg: str, dist: Path, *, isolated: bool = True) -> Path:
    """Build ``pkg``'s wheel and sdist into ``dist``; return the wheel (exactly one of each)."""
    flags = [] if isolated else ["--no-isolation"]
    session.run(
        "python", "-m", "build", *flags, "--outdir", str(dist), f"packages/{pkg}", silent=True
    )
    version = release_checks.read_version(ROOT, pkg)
    dist_name = "migration_common" if pkg == "common" else pkg
    wheels = list(dist.glob(f"{dist_name}-{version}-py3-none-any.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel for {pkg} {version} in dist/, found {wheels}")
    sdists = list(dist.glob(f"{dist_name}-{version}.tar.gz"))
    if len(sdists) != 1:
        session.error(f"expected one sdist for {pkg} {version} in dist/, found {sdists}")
    return wheels[0]


def _check_wheel_alone(session: nox.Session, pkg: str, wheel: Path, version: str) -> None:
    """Install one wheel into a fresh virtualenv (siblings from dist/ only) and import it."""
    venv = Path(session.virtualenv.location).parent / "wheel-check" / pkg
    shutil.rmtree(venv, ignore_errors=True)
    # No pip inside (faster): the session's pip installs into it with --python.
    session.run("python", "-m", "venv", "--without-pip", str(venv), silent=True)
    py = str(venv / "bin" / "python")
    session.run(
        "python",
        "-m",
        "pip",
        "--python",
        py,
        "install",
        "-q",
        "--disable-pip-version-check",
        "--find-links",
        str(wheel.parent),
        str(wheel),
        silent=True,
    )
    name = IMPORT_NAMES[pkg]
    out = session.run(
        py, "-c", f"import {name}; print({name}.__version__)", external=True, silent=True
    )
    got = (out or "").strip()
    if got != version:
        session.error(f"{pkg}: installed wheel reports version {got!r}, VERSION says {version!r}")
    if pkg == "oma":
        _check_oma_extras(session, py, venv)
    session.log(f"{pkg} {version}: wheel installs alone and imports")


def _check_oma_extras(session: nox.Session, py: str, venv: Path) -> None:
    """The oma wheel alone has no database driver and names the extra to install."""
    extras = session.run(
        py,
        "-c",
        "from importlib.metadata import metadata; "
        "print(' '.join(sorted(metadata('oma').get_all('Provides-Extra'))))",
        external=True,
        silent=True,
    )
    if not {"postgresql", "mariadb"} <= set((extras or "").split()):
        session.error(f"oma must offer the extras postgresql and mariadb, has {extras!r}")
    for url, extra in (
        ("postgresql://oma@127.0.0.1:1/oma", "postgresql"),
        ("mysql://oma@127.0.0.1:1/oma", "mariadb"),
    ):
        out = session.run(
            str(venv / "bin" / "oma"),
            "db",
            "status",
            external=True,
            silent=True,
            success_codes=[3],
            env={"OMA_DATABASE_URL": url, "OMA_DATA_DIR": str(venv / "oma-data")},
        )
        if f"oma[{extra}]" not in (out or ""):
            session.error(f"oma without drivers must name oma[{extra}] for {url}, said {out!r}")
