"""Private files: the SQLite database and the secret key are created 0600 in a 0700 directory;
a missing database driver names the extra to install; each ``oma serve`` has its own gunicorn
control socket (real ``oma`` processes)."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from labtest.procs import ManagedProcess, free_port, wait_until
from migration_common import ConfigError
from oma.cli._errors import ExitCode
from oma.cli.serve import MAX_SOCKET_PATH, control_socket_options
from oma.database.db import connect_database
from oma.secrets import load_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}
    env.update(OMA_DATA_DIR=str(data_dir), OMA_LOG_LEVEL="WARNING", **extra)
    return env


def _oma(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oma", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_oma_db_upgrade_creates_a_private_data_dir_and_database(tmp_path: Path) -> None:
    data = tmp_path / "state" / "oma"
    env = _env(data)
    assert _oma(env, "db", "upgrade").returncode == 0
    # token create opens the database and generates the secret key (no OMA_SECRET_KEY)
    made = _oma(env, "token", "create", "--name", "ops", "--role", "admin")
    assert made.returncode == 0, made.stderr
    assert _mode(data) == 0o700
    assert _mode(data / "oma.db") == 0o600
    for leftover in data.glob("oma.db-*"):  # -wal / -shm while a connection was open
        assert _mode(leftover) == 0o600, leftover


def test_oma_worker_creates_its_data_dir_0700_with_an_external_database(tmp_path: Path) -> None:
    import psycopg2

    from labtest.oma import throwaway_database

    data = tmp_path / "state" / "oma"
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_database("postgresql"))
        except psycopg2.OperationalError as exc:
            pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}".strip())
        env = _env(data, OMA_DATABASE_URL=url, OMA_SECRET_KEY=Fernet.generate_key().decode())
        worker = stack.enter_context(
            ManagedProcess(
                [sys.executable, "-m", "oma", "worker"],
                env=env,
                name="oma-worker",
                log_path=tmp_path / "worker.log",
            )
        )
        worker.wait_path(data / "exports" / "logs", timeout=60)
        assert _mode(data) == 0o700
        assert not (data / "oma.db").exists()  # the database is PostgreSQL


def test_sqlite_file_and_its_wal_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "oma.db"
    db = connect_database(f"sqlite:///{path}")
    db.connect()
    try:
        db.execute_sql("CREATE TABLE t (x INTEGER)")
        db.execute_sql("INSERT INTO t VALUES (1)")
        assert _mode(path.parent) == 0o700
        assert _mode(path) == 0o600
        assert _mode(Path(f"{path}-wal")) == 0o600
        assert _mode(Path(f"{path}-shm")) == 0o600
    finally:
        db.close()


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    db = connect_database(f"sqlite:///{shared / 'oma.db'}")
    assert _mode(shared) == 0o755  # never chmod a directory the operator chose
    assert _mode(shared / "oma.db") == 0o600
    db.close()


def test_generated_secret_key_is_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    load_key(None, data)
    assert _mode(data) == 0o700
    assert _mode(data / "secret.key") == 0o600


@pytest.mark.parametrize(
    ("url", "blocked", "extra"),
    [
        ("postgresql://oma@127.0.0.1:1/oma", ("psycopg2", "psycopg"), "postgresql"),
        ("mysql://oma@127.0.0.1:1/oma", ("pymysql", "MySQLdb"), "mariadb"),
    ],
)
def test_missing_driver_names_the_extra(
    url: str, blocked: tuple[str, ...], extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(ConfigError) as err:
        connect_database(url)
    assert err.value.variable == "OMA_DATABASE_URL"
    assert f"pip install 'oma[{extra}]'" in str(err.value)


def test_oma_command_without_the_driver_says_which_extra(tmp_path: Path) -> None:
    # the real CLI in a process where the PostgreSQL drivers cannot be imported
    code = (
        "import sys; sys.modules.update(psycopg2=None, psycopg=None); "
        "from oma.cli import main; main(['db', 'status'])"
    )
    env = _env(tmp_path / "data", OMA_DATABASE_URL="postgresql://oma@127.0.0.1:1/oma")
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == ExitCode.CONFIG, res.stderr
    assert "the PostgreSQL driver is not installed" in res.stderr
    assert "pip install 'oma[postgresql]'" in res.stderr


def test_control_socket_is_per_instance_or_off_when_too_long(tmp_path: Path) -> None:
    assert control_socket_options(tmp_path, 8082) == {
        "control_socket": str(tmp_path.resolve() / "oma-serve-8082.ctl"),
        "control_socket_mode": 0o600,
    }
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH - len(str(tmp_path))))
    assert control_socket_options(deep, 8082) == {"control_socket_disable": True}


def test_two_oma_serve_instances_keep_their_own_control_sockets(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    procs: list[ManagedProcess] = []
    sockets: list[Path] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            data = tmp_path / name
            env = _env(
                data,
                OMA_BIND=f"127.0.0.1:{port}",
                OMA_SECRET_KEY=Fernet.generate_key().decode(),
                OMA_API_WORKERS="1",
                HOME=str(home),
                XDG_RUNTIME_DIR=str(runtime),
            )
            proc = ManagedProcess(
                [sys.executable, "-m", "oma", "serve"],
                env=env,
                name=f"oma-serve-{name}",
                log_path=tmp_path / f"serve-{name}.log",
            ).start()
            procs.append(proc)
            proc.wait_port(port, timeout=60)
            sock = data / f"oma-serve-{port}.ctl"
            wait_until(sock.exists, timeout=30, what=f"control socket of {name}", proc=proc.proc)
            sockets.append(sock)
        for sock in sockets:
            assert stat.S_ISSOCK(sock.stat().st_mode) and _mode(sock) == 0o600
        # gunicorn's shared default paths are not used
        assert not (runtime / "gunicorn.ctl").exists()
        assert not (home / ".gunicorn").exists()
        # stopping one instance leaves the other's socket in place
        procs[0].stop()
        assert not sockets[0].exists()
        assert stat.S_ISSOCK(sockets[1].stat().st_mode) and procs[1].alive()
    finally:
        for proc in procs:
            proc.stop()
