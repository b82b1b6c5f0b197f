"""HTTP progress sink: POST each disk's newest update to the VMA on a background thread.

``offer`` never blocks: it stores the update as the disk's pending one (a newer update
replaces an older unsent one, so a slow or dead VMA only loses intermediate states). The
sender thread posts pending updates one by one; an intermediate update is tried once, a final
one (completed/failed) up to ``final_attempts`` times with backoff. ``close`` waits (bounded)
for the final updates to go out.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from .._log import get_logger
from .._states import TERMINAL

if TYPE_CHECKING:
    from ._update import DiskUpdate

log = get_logger(__name__)


class HttpProgressSink:
    """Posts progress updates to ``{base}/api/v1/progress/{job_id}/update`` (an https base
    is verified with ``verify``: a CA file, or True for the system's CAs)."""

    def __init__(
        self,
        base_url: str,
        job_id: str,
        token: str | None = None,
        *,
        timeout: float = 5.0,
        final_attempts: int = 5,
        backoff: float = 0.25,
        close_timeout: float = 30.0,
        verify: bool | str = True,
    ) -> None:
        from migration_common import HttpClient

        self.path = f"/api/v1/progress/{quote(job_id, safe='')}/update"
        self.client = HttpClient(base_url, token=token, timeout=timeout, retries=0, verify=verify)
        self.final_attempts = final_attempts
        self.backoff = backoff
        self.close_timeout = close_timeout
        self.sent = 0
        self.failed = 0
        self._pending: dict[str, DiskUpdate] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="progress-http", daemon=True)
        self._thread.start()

    def offer(self, update: DiskUpdate) -> None:
        """Queue ``update`` as its disk's newest (replacing an unsent older one)."""
        with self._cond:
            self._pending[update.disk_key] = update
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    return
                key = next(iter(self._pending))
                update = self._pending.pop(key)
            self._post(update)

    def _post(self, update: DiskUpdate) -> None:
        from migration_common import HttpError

        final = update.status in TERMINAL
        attempts = self.final_attempts if final else 1
        for attempt in range(attempts):
            with self._cond:
                newer = self._pending.get(update.disk_key)
            if newer is not None and newer.seq > update.seq and not final:
                return  # superseded while we were busy
            try:
                # send(): any 2xx counts, whatever the body (JSON or not)
                self.client.send("POST", self.path, json=update.to_dict())
                self.sent += 1
                return
            except HttpError as exc:
                if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                    attempts = 0
                if attempt + 1 >= attempts:
                    self.failed += 1
                    # An intermediate update is superseded a second later: no log spam.
                    (log.warning if final else log.debug)(
                        "progress update not delivered",
                        disk_key=update.disk_key,
                        seq=update.seq,
                        final=final,
                        error=str(exc),
                    )
                    return
                time.sleep(self.backoff * (2**attempt))

    def close(self) -> None:
        """Deliver pending updates (bounded by ``close_timeout``) and stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(self.close_timeout)
        self.client.close()
