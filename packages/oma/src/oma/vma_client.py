"""The OMA's client for one VMA's HTTP API (``/api/v1``, bearer token).

A thin typed layer over :class:`migration_common.HttpClient`. Every failure becomes
:class:`oma.errors.VmaClientError` (or :class:`oma.errors.VmaUnreachable` when no answer came)
in exactly one place, :func:`_translate`; the error keeps the HTTP ``status``, the response
``body`` and the VMA's own error ``code`` (``{"error": {"code", "message", "field"}}``) so
callers can tell "unknown job" (404) from "VMA down".

The token is sent as a bearer header only; it never appears in a URL or a log line.
An ``https://`` VMA's certificate is verified against ``verify`` (:func:`verify_for`: the
OMA CA, which issues an enrolled VMA's server certificate, or OMA_VMA_CA_FILE); a failure
says so ("TLS certificate verification failed"). A revoked VMA is never called: every call
raises VmaClientError with code ``revoked``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from migration_common import (
    ContractError,
    HttpClient,
    HttpConnectionError,
    HttpError,
    JobProgress,
    parse_job_progress,
    register_secret,
)

from .errors import VmaClientError, VmaUnreachable

if TYPE_CHECKING:
    from .config import OmaConfig
    from .database.models import VmaAppliance

API_PREFIX = "/api/v1"


def verify_for(config: OmaConfig) -> str:
    """The CA file VMA certificates are verified with: OMA_VMA_CA_FILE, else the OMA CA's
    certificate (the CA is created when it does not exist yet)."""
    if config.vma_ca_file:
        return str(config.vma_ca_file)
    from .nbd.tls import locked_ca

    with locked_ca(config.data_dir) as ca:
        return str(ca.cert_path)


def _error_fields(body: str) -> tuple[str | None, str | None]:
    """The VMA's ``error.code`` and ``error.message`` from a JSON error body, if any."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return None, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return err.get("code"), err.get("message")
    if isinstance(err, str):
        return None, err
    return None, None


@contextlib.contextmanager
def _translate(what: str, url: str) -> Iterator[None]:
    """Turn migration_common HTTP errors into VmaClientError/VmaUnreachable (one adapter)."""
    try:
        yield
    except HttpConnectionError as exc:
        err: VmaClientError = VmaUnreachable(f"VMA unreachable: {what} ({exc})")
        err.status, err.body, err.code, err.url = None, "", None, url  # type: ignore[attr-defined]
        raise err from exc
    except HttpError as exc:
        code, message = _error_fields(exc.body)
        text = message or exc.body[:300] or "no body"
        err = VmaClientError(f"VMA refused {what}: HTTP {exc.status}: {text}")
        err.status, err.body, err.code, err.url = exc.status, exc.body, code, url  # type: ignore[attr-defined]
        raise err from exc
    except ContractError as exc:
        err = VmaClientError(f"VMA answered {what} with an invalid document: {exc}")
        err.status, err.body, err.code, err.url = None, "", "contract", url  # type: ignore[attr-defined]
        raise err from exc


def error_status(exc: BaseException) -> int | None:
    """The HTTP status carried by a VmaClientError (None when the VMA did not answer)."""
    return getattr(exc, "status", None)


class VmaClient:
    """Calls one VMA: replicate, batched progress, jobs, discovery, power and CBT.

    ``url`` is the VMA's base URL (``http://host:8081``; a trailing ``/api/v1`` is accepted).
    ``retries`` applies to connection errors and 5xx answers only (never to 4xx).
    ``verify`` is the CA file (or True: the system's CAs) an https VMA's certificate must
    chain to; ``revoked`` makes every call fail without contacting the VMA.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.2,
        verify: bool | str = True,
        revoked: bool = False,
    ) -> None:
        base = url.rstrip("/")
        if not base.endswith(API_PREFIX):
            base += API_PREFIX
        register_secret(token)
        self.url = base
        self.revoked = revoked
        self._http = HttpClient(
            base, token=token, timeout=timeout, retries=retries, backoff=backoff, verify=verify
        )

    @classmethod
    def for_appliance(
        cls, row: VmaAppliance, token: str, config: OmaConfig, **kw: Any
    ) -> VmaClient:
        """A client for a registered VMA: its URL, ``token`` (decrypted), the configured CA and
        timeout, refusing every call when the VMA is revoked."""
        kw.setdefault("timeout", config.vma_timeout)
        return cls(
            row.url, token, verify=verify_for(config), revoked=row.revoked_at is not None, **kw
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> VmaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, what: str, **kw: Any) -> Any:
        if self.revoked:
            err = VmaClientError(f"VMA refused {what}: the VMA's enrollment was revoked")
            err.status, err.body, err.code, err.url = None, "", "revoked", self.url  # type: ignore[attr-defined]
            raise err
        with _translate(what, self._http.url(path)):
            return self._http.request(method, path, **kw)

    # -- replication -----------------------------------------------------------------------

    def replicate(
        self,
        job_id: str,
        vm_id: str,
        disks: Sequence[dict[str, Any]],
        *,
        verify: bool = False,
        target_is_zero: bool = False,
        resume_from_job: str | None = None,
    ) -> dict[str, Any]:
        """Start ``job_id`` on the VMA; ``disks``: [{disk_key, target_uri, previous_change_id}].

        Idempotent on the VMA side: the same job id with the same body answers 202 again, so a
        worker that crashed after sending may send it again. ``resume_from_job`` asks the VMA to
        continue that failed full job's copy (its snapshot and checkpoints); the answer's
        ``resume`` says whether it does (``resumed``, per-disk ``disks`` offsets) or why not
        (``reason``).
        """
        body = {
            "job_id": job_id,
            "vm_id": vm_id,
            "disks": [
                {
                    "disk_key": str(d["disk_key"]),
                    "target_uri": d["target_uri"],
                    "previous_change_id": d.get("previous_change_id") or None,
                }
                for d in disks
            ],
            "options": {"verify": verify, "target_is_zero": target_is_zero},
        }
        if resume_from_job:
            body["resume_from_job"] = resume_from_job
        return self._call("POST", "replicate", json=body, what=f"replicate job {job_id}")

    def progress_batch(self, job_ids: Sequence[str]) -> tuple[list[JobProgress], list[str]]:
        """Progress of many jobs in one request: (JobProgress list, ids the VMA does not know)."""
        if not job_ids:
            return [], []
        data = self._call(
            "GET",
            "progress",
            params={"job_ids": ",".join(job_ids)},
            what="batched progress",
            retries=0,
        )
        if not isinstance(data, dict):
            raise VmaClientError("VMA answered batched progress with a non-object")
        with _translate("batched progress", self._http.url("progress")):
            jobs = [parse_job_progress(j) for j in data.get("jobs") or []]
        return jobs, [str(j) for j in data.get("not_found") or []]

    def progress(self, job_id: str) -> JobProgress:
        """Progress of one job (404 → VmaClientError with status 404)."""
        data = self._call("GET", f"progress/{job_id}", what=f"progress of job {job_id}")
        with _translate(f"progress of job {job_id}", self._http.url(f"progress/{job_id}")):
            return parse_job_progress(data)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The VMA's job record: status, pid, error, progress."""
        return self._call("GET", f"jobs/{job_id}", what=f"get job {job_id}")

    def stop_job(self, job_id: str) -> dict[str, Any]:
        """Ask the VMA to stop job ``job_id`` (SIGTERM, snapshot removal, status stopped)."""
        return self._call("POST", f"jobs/{job_id}/stop", json={}, what=f"stop job {job_id}")

    def set_bandwidth(self, job_id: str, limit_bps: int | None) -> dict[str, Any]:
        """Set job ``job_id``'s bandwidth limit in bytes/s (None: unlimited); a running
        migratekit applies it within one progress interval."""
        return self._call(
            "PUT",
            f"jobs/{job_id}/bandwidth",
            json={"limit_bps": limit_bps},
            what=f"set the bandwidth limit of job {job_id}",
        )

    # -- inventory, power, CBT -----------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The VMA's health document (proves URL and token)."""
        return self._call("GET", "health", what="health", retries=0)

    def discover(
        self,
        vcenter: str,
        username: str,
        password: str,
        *,
        datacenter: str | None = None,
        insecure: bool = False,
    ) -> list[dict[str, Any]]:
        """VMs of a vCenter as seen by the VMA (credentials go in the body, never the URL)."""
        body: dict[str, Any] = {
            "vcenter": vcenter,
            "username": username,
            "password": password,
            "insecure": insecure,
        }
        if datacenter:
            body["datacenter"] = datacenter
        data = self._call("POST", "discover", json=body, what=f"discover {vcenter}", retries=0)
        return list((data or {}).get("vms") or [])

    def get_vm(self, vm_id: str) -> dict[str, Any]:
        """One VM's inventory record."""
        return self._call("GET", f"vms/{vm_id}", what=f"get vm {vm_id}")

    def power_state(self, vm_id: str) -> str:
        """``poweredOn`` / ``poweredOff`` / ``suspended``."""
        data = self._call("GET", f"vms/{vm_id}/power", what=f"power state of {vm_id}")
        return str(data["power_state"])

    def power_off(
        self, vm_id: str, *, graceful: bool = True, timeout_s: int = 300, force: bool = True
    ) -> dict[str, Any]:
        """Shut the VM down (guest shutdown, then forced after ``timeout_s`` if ``force``)."""
        body = {"graceful": graceful, "timeout_s": timeout_s, "force": force}
        return self._call(
            "POST",
            f"vms/{vm_id}/power-off",
            json=body,
            what=f"power off {vm_id}",
            retries=0,
            timeout=(5.0, float(timeout_s) + 60.0),
        )

    def power_on(self, vm_id: str) -> dict[str, Any]:
        """Power the VM on."""
        return self._call(
            "POST", f"vms/{vm_id}/power-on", json={}, what=f"power on {vm_id}", retries=0
        )

    def cbt(self, vm_id: str) -> dict[str, Any]:
        """The VM's change-tracking status."""
        return self._call("GET", f"vms/{vm_id}/cbt", what=f"cbt of {vm_id}")

    def enable_cbt(self, vm_id: str) -> dict[str, Any]:
        """Enable change tracking on the VM."""
        return self._call(
            "POST", f"vms/{vm_id}/cbt/enable", json={}, what=f"enable cbt on {vm_id}", retries=0
        )
