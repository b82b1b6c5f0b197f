"""Read-only commands: zones, offerings, networks, templates, async jobs."""

from __future__ import annotations

from typing import Any

from . import views
from .errors import bad_value, invalid
from .params import Params
from .store import Store

TEMPLATE_FILTERS = (
    "featured",
    "self",
    "selfexecutable",
    "sharedexecutable",
    "executable",
    "community",
    "all",
)


def page(p: Params, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """CloudStack list answer with paging; an empty list is ``{}``."""
    total = len(items)
    size = p.integer("pagesize")
    number = p.integer("page")
    if size and size > 0:
        start = ((number or 1) - 1) * size
        items = items[start : start + size]
    if not items:
        return {}
    return {"count": total, key: items}


def filter_items(p: Params, items: list[dict[str, Any]], *fields: str) -> list[dict[str, Any]]:
    """Keep items whose ``fields`` equal the request's values (any case) and ``keyword``."""
    for field in fields:
        value = p.get(field)
        if value is not None:
            items = [i for i in items if str(i.get(field, "")).lower() == value.lower()]
    keyword = p.get("keyword")
    if keyword is not None:
        items = [i for i in items if keyword.lower() in str(i.get("name", "")).lower()]
    return items


def list_zones(store: Store, p: Params) -> dict[str, Any]:
    """listZones: id, name, keyword."""
    return page(p, "zone", filter_items(p, list(store.data["zones"]), "id", "name"))


def list_service_offerings(store: Store, p: Params) -> dict[str, Any]:
    """listServiceOfferings: id, name, keyword."""
    return page(
        p, "serviceoffering", filter_items(p, list(store.data["service_offerings"]), "id", "name")
    )


def list_disk_offerings(store: Store, p: Params) -> dict[str, Any]:
    """listDiskOfferings: id, name, keyword."""
    return page(
        p, "diskoffering", filter_items(p, list(store.data["disk_offerings"]), "id", "name")
    )


def list_networks(store: Store, p: Params) -> dict[str, Any]:
    """listNetworks: id, zoneid, name, keyword."""
    return page(p, "network", filter_items(p, list(store.data["networks"]), "id", "zoneid", "name"))


def list_templates(store: Store, p: Params) -> dict[str, Any]:
    """listTemplates: templatefilter (required), id, zoneid, name, keyword."""
    flt = p.req("templatefilter")
    if flt.lower() not in TEMPLATE_FILTERS:
        raise bad_value(
            f"Unable to execute API command listtemplates due to invalid value. "
            f"Invalid parameter templatefilter value={flt}; expected one of "
            f"{', '.join(TEMPLATE_FILTERS)}"
        )
    items = list(store.data["templates"])
    if flt.lower() == "featured":
        items = [t for t in items if t.get("isfeatured")]
    elif flt.lower() == "community":
        items = [t for t in items if t.get("ispublic")]
    return page(p, "template", filter_items(p, items, "id", "zoneid", "name"))


def query_async_job_result(store: Store, p: Params) -> dict[str, Any]:
    """queryAsyncJobResult: jobid."""
    jobid = p.req("jobid")
    job = store.data["jobs"].get(jobid)
    if job is None:
        raise invalid(p.command, "jobid", jobid)
    return views.job(job)


def list_async_jobs(store: Store, p: Params) -> dict[str, Any]:
    """listAsyncJobs: every job, newest first."""
    jobs = sorted(store.data["jobs"].values(), key=lambda j: j["ready_at"], reverse=True)
    return page(p, "asyncjobs", [views.job(j) for j in jobs])
