"""Find a VM context from what an operator types: its id, its VM name or its VMware id."""

from __future__ import annotations

from typing import Any

from ._client import ApiClient
from ._errors import CliError, ExitCode


def find_context(api: ApiClient, ref: str) -> dict[str, Any]:
    """The VM context named by ``ref`` (context id, exact VM name, or VMware VM id)."""
    page = api.get("vm-contexts", name=ref, limit=500)
    exact = [c for c in page["items"] if c["name"] == ref]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise CliError(
            f"{len(exact)} VMs are named {ref!r}",
            hint="use the context id from `oma vms`",
            code=ExitCode.CONFLICT,
        )
    from migration_common import canonical_vm_id

    try:
        vm_id = canonical_vm_id(ref)  # VMware ids are stored canonical (a UUID in lower case)
    except ValueError:
        vm_id = ref
    offset = 0
    while True:
        page = api.get("vm-contexts", limit=500, offset=offset)
        for ctx in page["items"]:
            if ref == ctx["id"] or vm_id == ctx["vm_id"]:
                return ctx
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    raise CliError(
        f"no managed VM matches {ref!r}",
        hint="see `oma vms`; add VMs through discovery first",
        code=ExitCode.NOT_FOUND,
    )


def latest_failover(api: ApiClient, ctx: dict[str, Any]) -> dict[str, Any]:
    """The VM context's newest live failover (any status); NOT_FOUND when it has none."""
    items = [
        fo
        for fo in api.get(f"vm-contexts/{ctx['id']}/failovers")["items"]
        if fo.get("type", "live") == "live"
    ]
    if not items:
        raise CliError(
            f"{ctx['name']} has no live failover",
            hint="start one with `oma failover VM --network SRC=ID --offering ID`",
            code=ExitCode.NOT_FOUND,
        )
    return items[0]
