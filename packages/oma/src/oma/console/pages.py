"""Read-only pages: overview, VMs, one VM, and the live fragments they poll.

Each live fragment is one request per page for everything it shows (all visible jobs at once),
answered from the API's list reads, so 200 active jobs cost a handful of queries per poll.
"""

from __future__ import annotations

from typing import Any

from flask import render_template, request

from ..api.validation import MAX_OFFSET
from ..database.models import ContextState
from ..database.repos import contexts
from ..workflows.failover.target_vm import source_nics
from . import api_calls as api
from .blueprint import bp

ACTIVE_LIMIT = 500  # the API's page maximum: every active job on one page
FAILURES_SHOWN = 10


def _overview() -> dict[str, Any]:
    active = api.get("replications", active="true", limit=ACTIVE_LIMIT)
    failed = api.get("replications", status="failed", limit=FAILURES_SHOWN)
    workflows = api.get("workflows", status="failed", limit=FAILURES_SHOWN)["items"]
    names = contexts.names({w["vm_context_id"] for w in workflows if w["vm_context_id"]})
    return {
        "counts": contexts.count_by_state(),
        "failed_workflows": [w | {"vm_name": names.get(w["vm_context_id"])} for w in workflows],
        "active": active["items"],
        "active_total": active["total"],
        "active_total_exact": active["total_exact"],
        "failures": failed["items"],
        "health": api.call("GET", "health").body or {},
        "vmas": api.get("vma-appliances")["items"],
    }


@bp.get("/")
def overview() -> str:
    """Counts by state, active jobs, recent failures, worker and VMA health."""
    return render_template("overview.html", **_overview())


@bp.get("/live/overview")
def overview_live() -> str:
    """The overview's live part."""
    return render_template("_overview_live.html", **_overview())


VMS_PER_PAGE = 200


def _vm_filters() -> dict[str, str]:
    filters = {k: request.args.get(k, "") for k in ("state", "group", "vma", "name", "offset")}
    if not filters["offset"].isdigit():
        filters["offset"] = ""
    return filters


def _vm_rows(filters: dict[str, str]) -> dict[str, Any]:
    query = {"state": filters["state"], "vma_id": filters["vma"], "name": filters["name"]}
    offset = int(filters["offset"] or 0)
    if filters["group"]:  # the group's members among every VM matching the other filters
        wanted = {m["vm_context_id"] for m in api.get(f"groups/{filters['group']}")["members"]}
        items, after, more = [], None, True
        while more and len(items) < len(wanted):
            listing = api.get("vm-contexts", **query, limit=ACTIVE_LIMIT, after=after)
            more, after = listing["has_more"], listing["next_after"]
            items += [i for i in listing["items"] if i["id"] in wanted]
        total, exact, more, offset = len(items), True, False, 0
    else:
        offset = min(offset, MAX_OFFSET)
        listing = api.get("vm-contexts", **query, limit=VMS_PER_PAGE, offset=offset)
        items, total, exact = listing["items"], listing["total"], listing["total_exact"]
        # deeper than the API's offset bound, the name and state filters narrow the list
        more = listing["has_more"] and offset + VMS_PER_PAGE <= MAX_OFFSET
    active = {
        j["vm_context_id"]: j
        for j in api.get("replications", active="true", limit=ACTIVE_LIMIT)["items"]
    }
    vmas = {v["id"]: v["name"] for v in api.get("vma-appliances")["items"]}
    return {
        "vms": items,
        "total": total,
        "total_exact": exact,
        "more": more,
        "offset": offset,
        "per_page": VMS_PER_PAGE,
        "jobs": active,
        "vma_names": vmas,
    }


@bp.get("/vms")
def vms() -> str:
    """Protected VMs, filtered by state, group, VMA or name."""
    filters = _vm_filters()
    return render_template(
        "vms.html",
        filters=filters,
        states=[s.value for s in ContextState],
        groups=api.get("groups")["items"],
        vmas=api.get("vma-appliances")["items"],
        **_vm_rows(filters),
    )


@bp.get("/live/vms")
def vms_live() -> str:
    """The VM list's rows."""
    filters = _vm_filters()
    return render_template("_vms_rows.html", filters=filters, **_vm_rows(filters))


def _vm(context_id: str) -> dict[str, Any]:
    ctx = api.get(f"vm-contexts/{context_id}", jobs=20, events=100)
    active = api.get(f"replications/{ctx['active_job_id']}") if ctx["active_job_id"] else None
    failovers = api.get(f"vm-contexts/{context_id}/failovers")["items"]
    tests = api.get(f"vm-contexts/{context_id}/test-failovers")["items"]
    volumes = {v["disk_key"]: v for v in ctx.get("volumes") or []}
    return {
        "vm": ctx,
        "active": active,
        "failover": failovers[0] if failovers else None,
        "test": tests[0] if tests else None,
        "volumes": volumes,
        "nics": source_nics(ctx.get("spec") or {}),
    }


@bp.get("/vms/<context_id>")
def vm(context_id: str) -> str:
    """One VM: disks and replicas, jobs with live progress, failovers, timeline, actions."""
    return render_template("vm.html", **_vm(context_id))


@bp.get("/live/vms/<context_id>")
def vm_live(context_id: str) -> str:
    """The VM page's live part."""
    return render_template("_vm_live.html", **_vm(context_id))
