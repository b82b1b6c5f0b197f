"""Verification: sha256 over the same ranges of source and target, read pipelined."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from ..errors import NbdCommandError, NbdError
from ..nbd import NbdClient
from ..nbd import _protocol as p
from ._extents import Range


def hash_ranges(
    client: NbdClient, ranges: list[Range], request_size: int = 1 << 20, window: int = 8
) -> str:
    """sha256 (hex) of the bytes of ``ranges`` read in order from ``client``."""
    digest = hashlib.sha256()
    requests = (
        (o + i, min(request_size, n - i)) for o, n in ranges for i in range(0, n, request_size)
    )
    queue: list[tuple[int, int, int]] = []  # (handle, offset, length) in send order
    received: dict[int, bytes] = {}
    exhausted = False
    while True:
        while not exhausted and len(queue) < window:
            nxt = next(requests, None)
            if nxt is None:
                exhausted = True
                break
            handle = client.next_handle()
            client.send_read(handle, nxt[0], nxt[1])
            queue.append((handle, nxt[0], nxt[1]))
        if not queue:
            return digest.hexdigest()
        while queue[0][0] not in received:
            error, handle = client.recv_simple()
            entry = next((q for q in queue if q[0] == handle), None)
            if entry is None:
                raise NbdError(f"reply for unknown handle {handle}", server=client.server)
            if error:
                raise NbdCommandError(
                    f"read failed: {p.errno_text(error)}",
                    errno=error,
                    server=client.server,
                    offset=entry[1],
                )
            received[handle] = client.recv_exact(entry[2])
        handle = queue.pop(0)[0]
        digest.update(received.pop(handle))


def hash_both(
    connect_source: Callable[[], NbdClient],
    connect_target: Callable[[], NbdClient],
    ranges: list[Range],
    request_size: int,
) -> tuple[str, str]:
    """Hash source and target concurrently; return (source digest, target digest)."""
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def run(name: str, factory: Callable[[], NbdClient]) -> None:
        try:
            with factory() as client:
                results[name] = hash_ranges(client, ranges, request_size)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=("source", connect_source), daemon=True),
        threading.Thread(target=run, args=("target", connect_target), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results["source"], results["target"]
