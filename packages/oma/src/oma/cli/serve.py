"""``oma serve``: the API under gunicorn (gthread workers), settings from OMA_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

# AF_UNIX socket paths longer than this do not fit sockaddr_un.sun_path (108 bytes with NUL).
MAX_SOCKET_PATH = 107


def control_socket_options(data_dir: Path, port: int) -> dict[str, Any]:
    """gunicorn's control-socket settings for one ``oma serve`` instance.

    gunicorn's default path (``$XDG_RUNTIME_DIR/gunicorn.ctl`` or ``~/.gunicorn/gunicorn.ctl``)
    is shared by every gunicorn of the user, and a starting instance unlinks the previous one's
    socket. Each instance gets ``<data dir>/oma-serve-<port>.ctl`` (mode 0600) instead, or
    none when that path is too long for a Unix socket.
    """
    path = Path(data_dir).resolve() / f"oma-serve-{port}.ctl"
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        return {"control_socket_disable": True}
    return {"control_socket": str(path), "control_socket_mode": 0o600}


def gunicorn_options(config: Any) -> dict[str, Any]:
    """The gunicorn settings ``oma serve`` runs with for ``config`` (an OmaConfig): gthread
    workers, ``api_workers`` x ``api_threads``, access log on stdout. The API benchmark runs
    its bare Flask baseline with exactly these."""
    host, port = config.bind
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": config.api_workers,
        "threads": config.api_threads,
        "worker_class": "gthread",
        "timeout": config.api_timeout,
        "graceful_timeout": 10,
        "accesslog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms',
        "errorlog": "-",
        "loglevel": config.log_level.lower(),
        "proc_name": "oma-api",
        **control_socket_options(config.data_dir, port),
    }


@click.command("serve")
@click.option("--bind", help="host:port to listen on (default OMA_BIND, 0.0.0.0:8082).")
@click.option("--workers", type=int, help="gunicorn worker processes (default OMA_API_WORKERS).")
@click.option("--threads", type=int, help="threads per worker (default OMA_API_THREADS).")
def command(bind: str | None, workers: int | None, threads: int | None) -> None:
    """Run the OMA HTTP API (gunicorn; migrations applied first when OMA_AUTO_UPGRADE)."""
    import dataclasses

    from gunicorn.app.base import BaseApplication

    from migration_common import get_logger, setup_logging

    from ._server import bind_database, load

    config = load(BIND=bind, API_WORKERS=workers, API_THREADS=threads)
    setup_logging(config.log_level, json_lines=config.log_format == "json")
    applied = bind_database(config)
    log = get_logger("oma.serve")
    if applied:
        log.info("schema migrations applied", names=",".join(applied))
    # Workers must not race on migrations again: they start with auto_upgrade off.
    worker_config = dataclasses.replace(config, auto_upgrade=False)
    options = gunicorn_options(config)

    class OmaApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):  # type: ignore[no-untyped-def]
            from ..api import create_app

            return create_app(worker_config)

    log.info(
        "starting API",
        bind=options["bind"],
        workers=config.api_workers,
        threads=config.api_threads,
        control_socket=options.get("control_socket", "disabled"),
    )
    OmaApplication().run()
