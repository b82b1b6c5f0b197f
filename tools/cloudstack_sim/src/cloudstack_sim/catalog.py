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


def page(store: Store, p: Params, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """CloudStack list answer with paging; an empty list is ``{}``."""
    total = len(items)
    size = p.integer("pagesize")
    number = p.integer("page")
    # BaseListCmd.validateSpecificParameters: page and pagesize go together
    if number is None and size is not None and size != -1:
        raise bad_value('"page" parameter is required when "pagesize" is specified')
    if size is None and number is not None:
        raise bad_value('"pagesize" parameter is required when "page" is specified')
    # BaseListCmd.getPageSize: no page larger than default.page.size (-1 = unlimited); `cs`
    # always asks for 500, so lowering the setting breaks its paged lists like on a real server
    limit = store.setting("default.page.size")
    if size is not None and limit != -1 and size > limit:
        raise bad_value(f"Page size can't exceed max allowed page size value: {limit}")
    if size == -1 and number is not None:
        raise bad_value("Can't specify page parameter when pagesize is -1 (Unlimited)")
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
    return page(store, p, "zone", filter_items(p, list(store.data["zones"]), "id", "name"))


def list_service_offerings(store: Store, p: Params) -> dict[str, Any]:
    """listServiceOfferings: id, name, keyword."""
    return page(
        store,
        p,
        "serviceoffering",
        filter_items(p, list(store.data["service_offerings"]), "id", "name"),
    )


def list_disk_offerings(store: Store, p: Params) -> dict[str, Any]:
    """listDiskOfferings: id, name, keyword."""
    return page(
        store, p, "diskoffering", filter_items(p, list(store.data["disk_offerings"]), "id", "name")
    )


def list_networks(store: Store, p: Params) -> dict[str, Any]:
    """listNetworks: id, zoneid, name, keyword."""
    return page(
        store, p, "network", filter_items(p, list(store.data["networks"]), "id", "zoneid", "name")
    )


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
    return page(store, p, "template", filter_items(p, items, "id", "zoneid", "name"))


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
    return page(store, p, "asyncjobs", [views.job(j) for j in jobs])


def list_os_types(store: Store, p: Params) -> dict[str, Any]:
    """listOsTypes: id, oscategoryid, description (exact), keyword (in the description)."""
    items = list(store.data.get("os_types", []))
    for field in ("id", "oscategoryid", "description"):
        value = p.get(field)
        if value is not None:
            items = [o for o in items if o[field].lower() == value.lower()]
    keyword = p.get("keyword")
    if keyword is not None:
        items = [o for o in items if keyword.lower() in o["description"].lower()]
    return page(store, p, "ostype", items)
