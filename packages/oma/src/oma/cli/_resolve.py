"""Find what an operator names: a full id, a unique id prefix (as short as 4 characters), or a
name. VM contexts are also found by their VMware id; jobs by a prefix of their id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._client import ApiClient
from ._errors import CliError, ExitCode

MIN_PREFIX = 4  # shorter prefixes match too much to be meant
PAGE = 500


def pages(api: ApiClient, path: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every item of a paged collection, page after page by its ``next_after`` cursor."""
    after = None
    while True:
        page = api.get(path, limit=PAGE, after=after, **params)
        yield from page["items"]
        after = page.get("next_after")
        if not page["items"] or not page.get("has_more") or not after:
            return


def pick(
    items: list[dict[str, Any]], ref: str, *, what: str, hint: str, names: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The one item whose id is ``ref``, whose name (a key in ``names``) is ``ref``, or whose
    id starts with ``ref``; NOT_FOUND when none, CONFLICT (listing them) when several."""
    for item in items:
        if item["id"] == ref:
            return item
    for matches in (
        [i for i in items if any(i.get(n) == ref for n in names)],
        [i for i in items if len(ref) >= MIN_PREFIX and str(i["id"]).startswith(ref.lower())],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(_label(i, names) for i in matches[:5])
            raise CliError(
                f"{ref!r} matches {len(matches)} {what}s: {shown}",
                hint=f"give more of the id ({hint})",
                code=ExitCode.CONFLICT,
            )
    raise CliError(f"no {what} matches {ref!r}", hint=f"see {hint}", code=ExitCode.NOT_FOUND)


def _label(item: dict[str, Any], names: tuple[str, ...]) -> str:
    name = next((item[n] for n in names if item.get(n)), None)
    return f"{item['id']} ({name})" if name else str(item["id"])


def find(api: ApiClient, collection: str, ref: str, *, what: str, hint: str) -> dict[str, Any]:
    """An item of an unpaginated collection (VMAs, vCenters, targets) by id, name or prefix."""
    return pick(api.get(collection)["items"], ref, what=what, hint=hint, names=("name",))


def find_vma(api: ApiClient, ref: str) -> dict[str, Any]:
    """A registered VMA by id, name or id prefix."""
    return find(api, "vma-appliances", ref, what="VMA", hint="`oma vma list`")


def find_vcenter(api: ApiClient, ref: str) -> dict[str, Any]:
    """A saved vCenter login by id, name, vCenter host or id prefix."""
    items = api.get("vmware-credentials")["items"]
    return pick(
        items, ref, what="vCenter login", hint="`oma vcenter list`", names=("name", "vcenter")
    )


def find_target(api: ApiClient, ref: str) -> dict[str, Any]:
    """A CloudStack target by id, name or id prefix."""
    return find(api, "cloudstack-targets", ref, what="CloudStack target", hint="`oma target list`")


def find_context(api: ApiClient, ref: str) -> dict[str, Any]:
    """The VM context named by ``ref``: its VM name, context id, VMware VM id, or a unique
    prefix of the context id."""
    page = api.get("vm-contexts", name=ref, limit=PAGE)
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
    items = list(pages(api, "vm-contexts"))
    for ctx in items:
        if vm_id == ctx["vm_id"]:
            return ctx
    try:
        return pick(items, ref, what="managed VM", hint="`oma vms`", names=("name",))
    except CliError as exc:
        if exc.code == ExitCode.NOT_FOUND:
            exc.hint = "see `oma vms`; add VMs with `oma discover --add NAME`"
        raise


def find_job(api: ApiClient, ref: str) -> str:
    """The id of the replication job ``ref`` names (its id or a unique id prefix)."""
    if len(ref) >= 32 or len(ref) < MIN_PREFIX:
        return ref  # a whole id (or too short to search for): the API says whether it exists
    items = [{"id": j["id"]} for j in pages(api, "replications")]
    return pick(items, ref, what="job", hint="`oma jobs`")["id"]


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


@contextmanager
def naming(ctx: dict[str, Any]) -> Iterator[None]:
    """Inside the block, an API error that names the VM by its context id names it by its
    VM name instead (``VM context 5f0c…`` → ``VM web-1``)."""
    try:
        yield
    except CliError as exc:
        for spelled in (f"VM context {ctx['id']}", f"vm context {ctx['id']}"):
            exc.message = exc.message.replace(spelled, f"VM {ctx['name']}")
        exc.message = exc.message.replace(ctx["id"], ctx["name"])
        raise
