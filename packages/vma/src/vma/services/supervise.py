"""A tiny supervisor that runs a job's child (migratekit, or an nbdkit disk server) and records
how it ended.

Run as ``python -m vma.services.supervise EXIT_FILE PID_FILE -- migratekit run ...``. It is
the leader of its process group (the runner starts it in a new session), starts the command
as its child, writes the child's PID to ``PID_FILE``, forwards SIGTERM/SIGINT, and when the
child ends writes ``{"returncode": N}`` to ``EXIT_FILE`` (negative N = killed by signal -N).
The exit file survives a restart of the VMA API server, so a job whose migratekit ended while
the server was down still gets its true exit status. For nbdkit it also gives the server a
parent that outlives the short-lived thread that started it (nbdkit 1.32 sets
``PR_SET_PDEATHSIG`` and would die with that thread).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def _write_atomic(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the command after ``--``; return its exit status (128+N when killed by signal N)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 4 or args[2] != "--":
        print("usage: supervise EXIT_FILE PID_FILE -- COMMAND...", file=sys.stderr)
        return 2
    exit_file, pid_file, command = Path(args[0]), Path(args[1]), args[3:]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)

    def _forward(signum: int, _frame: object) -> None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    _write_atomic(pid_file, {"pid": child.pid})
    returncode = child.wait()
    _write_atomic(exit_file, {"returncode": returncode})
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main())
