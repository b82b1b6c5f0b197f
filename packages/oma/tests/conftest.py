"""Shared fixtures of the OMA tests.

- ``_clean_oma_env`` (autouse): no ``OMA_*`` variable leaks in from the caller's shell.
- ``db_url`` / ``db``: a migrated database bound to ``oma.database.database``; ``db`` is
  SQLite in a temporary directory, ``any_db`` is parametrised over SQLite, PostgreSQL and
  MariaDB (each server gets one throwaway database ``oma_test_<random>`` per test run,
  dropped at the end; a missing server skips with the reason shown).
- ``app``, ``client``, ``runner``, ``auth``: a Flask app on a temporary SQLite database,
  its test client and CLI runner, and bearer headers per role; ``any_app`` is that app on
  each of the three databases.
- ``register_lab_vm``: registers a lab stack's VMA, CloudStack target and VM with a running
  ``oma serve`` through its API and returns the VM context id (the process tests).
- ``sha256_head``: ``sha256_head(path, size)``, the sha256 of a file's or device's first
  ``size`` bytes (replica contents against their sources).
- ``lab_context`` / ``lab_services``: for the in-process workflow labs, the VMA, default
  CloudStack target and VM context rows on a CloudStack simulator, and the
  ``ReplicationServices`` bound to that simulator, its client, an export manager and the VMA.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MY_HOST = ("127.0.0.1", 3306)


@pytest.fixture(autouse=True)
def _clean_oma_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OMA_"):
            monkeypatch.delenv(name, raising=False)


def _truncate_all() -> None:
    from oma.database import database
    from oma.database.models import ALL_MODELS

    with database.connection_context(), database.atomic():
        for model in reversed(ALL_MODELS):
            model.delete().execute()


def _bind(url: str) -> None:
    from oma.database import init_db, upgrade

    init_db(url)
    upgrade()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    """A fresh migrated SQLite database bound to the proxy, connected for the test."""
    from oma.database import database

    url = f"sqlite:///{tmp_path / 'oma.db'}"
    _bind(url)
    with database.connection_context():
        yield url
    database.obj.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run (skips when the server is absent)."""
    try:
        import psycopg2
    except ImportError:  # pragma: no cover
        pytest.skip("psycopg2 is not installed")
    name = f"oma_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}".strip())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        from oma.database import database

        if database.obj is not None and database.obj.database == name:
            database.obj.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A throwaway MariaDB database for this test run (skips when the server is absent)."""
    import pymysql

    name = f"oma_test_{secrets.token_hex(4)}"
    try:
        admin = pymysql.connect(
            host=MY_HOST[0],
            port=MY_HOST[1],
            user="root",
            password="",
            connect_timeout=3,
            autocommit=True,
        )
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB not reachable at 127.0.0.1:3306: {exc}")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        from oma.database import database

        if database.obj is not None and database.obj.database == name:
            database.obj.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test runs once per database; tables are emptied before each test."""
    from oma.database import database

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'oma.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = request.getfixturevalue("mariadb_url")
    _bind(url)
    _truncate_all()
    with database.connection_context():
        yield url
    database.obj.close()


@pytest.fixture
def config_overrides(tmp_path: Path) -> dict[str, Any]:
    """Settings for an app or worker under test: a temporary data dir and a fixed key."""
    from cryptography.fernet import Fernet

    return {
        "DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": Fernet.generate_key().decode(),
        "BY_ID_DIR": str(tmp_path / "by-id"),
        "WORKER_ID": "test-worker",
    }


@pytest.fixture
def app(config_overrides: dict[str, Any]) -> Any:
    """The Flask app on a fresh SQLite database (migrated), TESTING=True."""
    from oma.api import create_app

    return create_app({**config_overrides, "TESTING": True})


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_app(request: pytest.FixtureRequest, config_overrides: dict[str, Any]) -> Iterator[Any]:
    """The Flask app on SQLite, PostgreSQL and MariaDB (emptied tables), TESTING=True."""
    from oma.api import create_app
    from oma.database import database

    url = None
    if request.param != "sqlite":
        url = request.getfixturevalue(
            f"{'postgres' if request.param == 'postgresql' else 'mariadb'}_url"
        )
    app = create_app(
        {**config_overrides, "TESTING": True, **({"DATABASE_URL": url} if url else {})}
    )
    _truncate_all()
    yield app
    database.obj.close()


@pytest.fixture
def client(app: Any) -> Any:
    """Flask test client of ``app``."""
    return app.test_client()


@pytest.fixture
def runner(app: Any) -> Any:
    """Flask CLI runner of ``app``."""
    return app.test_cli_runner()


class AuthHeaders:
    """Bearer headers for each role, created once per app: ``auth.admin``, ``auth.viewer``."""

    def __init__(self, app: Any) -> None:
        from oma.database import database
        from oma.database.repos import tokens

        self.tokens: dict[str, str] = {}
        with app.app_context(), database.connection_context():
            for role in ("admin", "operator", "viewer"):
                _, plain = tokens.create_token(f"test-{role}", role)
                self.tokens[role] = plain

    def headers(self, role: str) -> dict[str, str]:
        """Authorization header for ``role``."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    @property
    def admin(self) -> dict[str, str]:
        """Admin headers."""
        return self.headers("admin")

    @property
    def operator(self) -> dict[str, str]:
        """Operator headers."""
        return self.headers("operator")

    @property
    def viewer(self) -> dict[str, str]:
        """Viewer headers."""
        return self.headers("viewer")


@pytest.fixture
def auth(app: Any) -> AuthHeaders:
    """Tokens for admin, operator and viewer on ``app``'s database."""
    return AuthHeaders(app)


@pytest.fixture
def any_auth(any_app: Any) -> AuthHeaders:
    """Tokens for admin, operator and viewer on ``any_app``'s database."""
    return AuthHeaders(any_app)


def _register_lab_vm(vc: Any, sim: Any, vm: Any, vma: Any, oma: Any) -> str:
    from labtest.oma import add_lab_vms, register_lab

    vma_id = register_lab(oma, vma=vma, sim=sim)
    return add_lab_vms(oma, vma_id=vma_id, vc=vc, vm_ids=[vm["id"]])[0]


@pytest.fixture
def register_lab_vm() -> Callable[..., str]:
    """``register(vc, sim, vm, vma, oma) -> context id``: the VMA ``vma-1``, the default
    CloudStack target ``lab`` and the lab VM, added through the OMA's API (201 each)."""
    return _register_lab_vm


def _sha256_head(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


@pytest.fixture
def sha256_head() -> Callable[[Path, int], str]:
    """``sha256_head(path, size)``: sha256 of the first ``size`` bytes of a file or device."""
    return _sha256_head


def _create_lab_context(
    sim: Any, vma: Any, vm_id: str, name: str, disks: dict[str, int], **context: Any
) -> str:
    from oma.database.db import database
    from oma.database.models import CloudStackTarget, VmaAppliance, VmContext, VmDisk

    with database.connection_context():
        appliance = VmaAppliance.create(name="vma-1", url=vma.url, token_encrypted="x")
        target = CloudStackTarget.create(
            name="lab",
            endpoint=sim.endpoint,
            api_key=sim.api_key,
            secret_key_encrypted="x",
            zone_id=sim.zone_id,
            oma_vm_id=sim.oma_vm_id,
            disk_offering_id=sim.custom_disk_offering_id,
            is_default=True,
        )
        ctx = VmContext.create(
            vma=appliance.id, target=target.id, vcenter="vc.lab", vm_id=vm_id, name=name, **context
        )
        for key, size in disks.items():
            VmDisk.create(context=ctx.id, disk_key=key, capacity_bytes=size)
    return ctx.id


@pytest.fixture
def lab_context() -> Callable[..., str]:
    """``lab_context(sim, vma, vm_id, name, disks, **columns) -> context id``: the VMA
    ``vma-1``, the default target ``lab`` on the simulator and a VM context with one
    ``vm_disks`` row per ``{disk key: capacity}``, in the bound database."""
    return _create_lab_context


def _create_lab_services(sim: Any, vma: Any, cs: Any, exports: Any) -> Any:
    from oma.cloudstack import wait_for_device
    from oma.vma_client import VmaClient
    from oma.workflows.failover.live import FailoverServices

    def vma_for(_row: Any) -> Any:
        return VmaClient(vma.url, vma.token, retries=0)

    return FailoverServices(
        cloudstack_for=lambda _row: cs,
        vma_for=vma_for,
        exports=exports,
        by_id_dir=sim.by_id_dir,
        device_timeout=10,
        wait_for_device=wait_for_device,
    )


@pytest.fixture
def lab_services() -> Callable[..., Any]:
    """``lab_services(sim, vma, cs, exports)``: the worker's services on the simulator's client
    ``cs`` and ``by_id_dir``, the export manager and a VmaClient per call (no retries)."""
    return _create_lab_services
