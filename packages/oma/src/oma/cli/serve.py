"""``oma serve``: the API under gunicorn (gthread workers), settings from OMA_* variables.

With OMA_TLS (or OMA_TLS_CERT/OMA_TLS_KEY) gunicorn serves HTTPS. Without a configured
certificate, the API's is issued from the OMA CA into ``<data dir>/pki/api-server.crt`` (key
0600) for the bind host, ``localhost``/``127.0.0.1``, this host's name and OMA_TLS_HOSTNAMES,
and issued again when those names change or it expires within 30 days. A non-loopback bind
without TLS is refused before anything listens, unless OMA_ALLOW_PLAINTEXT.
"""

from __future__ import annotations

import datetime as dt
import socket
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


API_CERT = "api-server.crt"
API_KEY = "api-server.key"
RENEW_BEFORE = dt.timedelta(days=30)


def api_hostnames(config: Any) -> list[str]:
    """The names an issued API certificate covers (bind host first when it is specific)."""
    host = config.bind[0]
    names = [] if host in ("0.0.0.0", "::", "") else [host]
    names += [*config.tls_hostnames, "localhost", "127.0.0.1", "::1", socket.gethostname()]
    return list(dict.fromkeys(n for n in names if n))


def _current_names(cert_path: Path) -> set[str] | None:
    """SAN entries of a still-valid certificate at ``cert_path`` (None: missing or expiring)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return None
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    return names | {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def api_certificate(config: Any) -> tuple[Path, Path]:
    """(certificate, key) the API serves HTTPS with: OMA_TLS_CERT/KEY, or one issued from the
    OMA CA (reissued when missing, expiring, not the CA's, or its names changed)."""
    if config.tls_cert:
        for path, name in ((config.tls_cert, "OMA_TLS_CERT"), (config.tls_key, "OMA_TLS_KEY")):
            if not Path(path).is_file():
                from migration_common import ConfigError

                raise ConfigError(name, f"{path} does not exist")
        return Path(config.tls_cert), Path(config.tls_key)
    from .. import pki
    from ..nbd.tls import locked_ca  # the CA is created under the lock workers use too

    with locked_ca(config.data_dir) as ca:
        pass
    cert_path, key_path = ca.directory / API_CERT, ca.directory / API_KEY
    hosts = api_hostnames(config)
    current = _current_names(cert_path)
    if (
        current != {str(_canonical(h)) for h in hosts}
        or not key_path.is_file()
        or not ca.verifies(cert_path.read_bytes())
    ):
        issued = ca.issue_server(hosts)
        pki.write_private(key_path, issued.key_pem)
        pki.write_private(cert_path, issued.cert_pem + ca.cert_pem)
    return cert_path, key_path


def _canonical(host: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def gunicorn_options(config: Any) -> dict[str, Any]:
    """The gunicorn settings ``oma serve`` runs with for ``config`` (an OmaConfig): gthread
    workers, ``api_workers`` x ``api_threads``, access log on stdout. The API benchmark runs
    its bare Flask baseline with exactly these."""
    host, port = config.bind
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": config.api_workers,
        "threads": config.api_threads,
        "worker_class": "migration_common.gunicorn_worker.JsonErrorThreadWorker",  # gthread
        "timeout": config.api_timeout,
        "graceful_timeout": 10,
        "accesslog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms',
        "errorlog": "-",
        "loglevel": config.log_level.lower(),
        "proc_name": "oma-api",
        **control_socket_options(config.data_dir, port),
    }


def tls_options(config: Any) -> dict[str, Any]:
    """gunicorn's certfile/keyfile for ``config`` (empty when TLS is off)."""
    if not config.tls:
        return {}
    cert, key = api_certificate(config)
    return {"certfile": str(cert), "keyfile": str(key)}


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
    log = get_logger("oma.serve")
    warning = config.check_bind()  # before anything listens or migrates
    if warning:
        log.warning(warning)
    applied = bind_database(config)
    if applied:
        log.info("schema migrations applied", names=",".join(applied))
    # Workers must not race on migrations again: they start with auto_upgrade off.
    worker_config = dataclasses.replace(config, auto_upgrade=False)
    options = {**gunicorn_options(config), **tls_options(config)}

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
        tls=bool(config.tls),
        workers=config.api_workers,
        threads=config.api_threads,
        control_socket=options.get("control_socket", "disabled"),
    )
    OmaApplication().run()
