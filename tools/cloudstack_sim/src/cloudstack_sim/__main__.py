"""``python -m cloudstack_sim`` / ``cloudstack-sim``: run the CloudStack API simulator.

Credentials come from ``CLOUDSTACK_SIM_API_KEY``/``CLOUDSTACK_SIM_SECRET_KEY`` or are generated
at first start into ``<state-dir>/credentials.json`` (mode 0600) — never from the command line.
Faults from ``CLOUDSTACK_SIM_FAULTS``; global settings from ``--setting name=value``
(repeatable). Writes ``<state-dir>/fixture.json`` and prints one JSON
line ``{"ready": true, "endpoint": …, …ids}`` on stdout when it accepts requests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from types import FrameType

from .api import Api
from .faults import FaultTable, parse_spec
from .server import SimServer
from .settings import parse_assignment
from .store import Store


def credentials(state_dir: Path) -> tuple[str, str]:
    """API key and secret: from the environment, else from (or generated into) the state dir."""
    key = os.environ.get("CLOUDSTACK_SIM_API_KEY")
    secret = os.environ.get("CLOUDSTACK_SIM_SECRET_KEY")
    if key and secret:
        return key, secret
    path = state_dir / "credentials.json"
    if path.exists():
        data = json.loads(path.read_text())
        return data["api_key"], data["secret_key"]
    key, secret = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"api_key": key, "secret_key": secret}, fh)
    return key, secret


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, start the server, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="cloudstack-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--by-id-dir",
        type=Path,
        default=None,
        help="where virtio-<serial> links of volumes attached to the OMA VM "
        "appear (default <state-dir>/by-id)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a global setting (e.g. default.page.size=100, sim.account.type=user); "
        "repeatable; kept in the state until changed",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        faults = FaultTable(parse_spec(os.environ.get("CLOUDSTACK_SIM_FAULTS")))
    except ValueError as exc:
        print(f"error: CLOUDSTACK_SIM_FAULTS: {exc}", file=sys.stderr)
        return 2
    try:
        chosen = dict(parse_assignment(text) for text in args.setting)
    except ValueError as exc:
        print(f"error: --setting {exc}", file=sys.stderr)
        return 2
    state_dir = args.state_dir.resolve()
    store = Store(state_dir, (args.by_id_dir or state_dir / "by-id").resolve())
    if chosen:
        store.update_settings(chosen)
    key, secret = credentials(state_dir)
    server = SimServer((args.host, args.port), Api(store, faults, key, secret))
    endpoint = f"http://{args.host}:{server.server_address[1]}/client/api"
    fixture = store.fixture(endpoint)
    _write_json(state_dir / "fixture.json", fixture)

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    print(json.dumps({"ready": True, **fixture}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
        with store.lock:
            store.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
