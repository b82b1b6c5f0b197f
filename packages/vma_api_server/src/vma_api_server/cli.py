"""The ``vma-api-server`` command: validate the settings, then run gunicorn.

gunicorn runs ``vma_api_server:create_app()`` with one worker (the job runner's supervision
lives in it) and ``VMA_THREADS`` threads, bound to ``VMA_BIND``, over HTTPS when the VMA is
enrolled (or VMA_TLS_CERT/KEY are set). A non-loopback bind without TLS is refused unless
VMA_ALLOW_PLAINTEXT. Secrets stay in the environment; nothing secret is put on gunicorn's
command line (the key is named by its path). ``vma-api-server enroll`` enrolls the VMA with an
OMA (see :mod:`vma_api_server.enroll`).
"""

from __future__ import annotations

import os
import sys


def gunicorn_argv(settings: dict[str, object]) -> list[str]:
    """The gunicorn command line for ``settings`` (no secrets in it)."""
    host, port = settings["BIND"]  # type: ignore[misc]
    bind = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "1",
        "--worker-class",  # gthread, with gunicorn's own error answers as JSON
        "migration_common.gunicorn_worker.JsonErrorThreadWorker",
        "--threads",
        str(settings["THREADS"]),
        "--bind",
        bind,
        "--timeout",
        str(int(float(settings["TIMEOUT"]))),  # type: ignore[arg-type]
        "--limit-request-line",
        "8190",  # gunicorn's maximum: 200 URL-encoded UUIDs fit (batched progress)
        "--graceful-timeout",
        "10",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
        *_optional_flags(),
        *_tls_flags(settings),
        "vma_api_server:create_app()",
    ]


def _tls_flags(settings: dict[str, object]) -> list[str]:
    """gunicorn's --certfile/--keyfile when the API serves HTTPS."""
    if not settings.get("TLS_CERT"):
        return []
    return ["--certfile", str(settings["TLS_CERT"]), "--keyfile", str(settings["TLS_KEY"])]


def _optional_flags() -> list[str]:
    """Flags only newer gunicorn versions know: no control socket in the home directory."""
    from gunicorn import config

    known = {flag for setting in config.KNOWN_SETTINGS for flag in (setting.cli or [])}
    return ["--no-control-socket"] if "--no-control-socket" in known else []


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vma-api-server`` (``--version``, ``--settings``, or run the server)."""
    from migration_common import ConfigError

    from .config import check_bind, load_config, settings_table

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "enroll":
        from .enroll import main as enroll_main

        return enroll_main(args[1:])
    if args and args[0] == "--version":
        import vma_api_server

        print(f"vma-api-server {vma_api_server.__version__}")
        return 0
    if args and args[0] in ("--settings", "--help", "-h"):
        print("usage: vma-api-server [--version | --settings | enroll ...]")
        print("vma-api-server: the VMA HTTP API under gunicorn. Settings (environment):")
        print("(`vma-api-server enroll --help`: enroll this VMA with an OMA)")
        print(settings_table())
        return 0
    if args:
        what = "option" if args[0].startswith("-") else "command"
        print(f"error: unknown {what} {args[0]!r}", file=sys.stderr)
        print(
            "hint: settings come from the environment (VMA_*); run `vma-api-server --help`",
            file=sys.stderr,
        )
        return 2
    try:
        settings = load_config()
        warning = check_bind(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("hint: run `vma-api-server --settings` to list every setting", file=sys.stderr)
        return 2
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    settings["DATA_DIR"].mkdir(mode=0o700, parents=True, exist_ok=True)
    command = gunicorn_argv(settings)
    os.execv(command[0], command)
    return 0  # not reached
