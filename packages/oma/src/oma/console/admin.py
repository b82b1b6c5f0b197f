"""Discovery and adding VMs, groups, schedules and settings (VMAs, vCenter logins, CloudStack
targets, and API tokens for admins)."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..api.auth import require
from ..database.models import Role
from ..database.repos import tokens
from ..errors import ConflictError
from . import api_calls as api
from .actions import _act
from .blueprint import bp

# form fields → JSON fields of the API's create requests: (name, kind) with kind str, bool, int
FORMS: dict[str, tuple[tuple[str, str], ...]] = {
    "vma-appliances": (("name", "str"), ("url", "str"), ("token", "str")),
    "vmware-credentials": (
        ("name", "str"),
        ("vcenter", "str"),
        ("username", "str"),
        ("password", "str"),
        ("datacenter", "str"),
        ("insecure", "bool"),
        ("is_default", "bool"),
    ),
    "cloudstack-targets": (
        ("name", "str"),
        ("endpoint", "str"),
        ("api_key", "str"),
        ("secret_key", "str"),
        ("zone_id", "str"),
        ("oma_vm_id", "str"),
        ("disk_offering_id", "str"),
        ("is_default", "bool"),
    ),
    "groups": (("name", "str"), ("priority", "int"), ("max_concurrent", "int")),
    "schedules": (
        ("name", "str"),
        ("cron", "str"),
        ("timezone", "str"),
        ("vm_context_id", "str"),
        ("group_id", "str"),
        ("type", "str"),
    ),
}
RESOURCE = "<any(" + ",".join(f'"{name}"' for name in FORMS) + "):resource>"
LABELS = {
    "vma-appliances": "VMA",
    "vmware-credentials": "vCenter login",
    "cloudstack-targets": "CloudStack target",
    "groups": "Group",
    "schedules": "Schedule",
}


def form_body(resource: str, form: Any) -> dict[str, Any]:
    """The API request body from a console form; empty fields are left out (the API names a
    missing or bad one), integers that do not parse are passed on for the API to refuse."""
    body: dict[str, Any] = {}
    for name, kind in FORMS[resource]:
        raw = form.get(name, "")
        if kind == "bool":
            body[name] = bool(raw)
        elif raw == "":
            continue
        elif kind == "int":
            body[name] = int(raw) if raw.lstrip("-").isdigit() else raw
        else:
            body[name] = raw
    return body


def _home(resource: str) -> str:
    return url_for(
        "console.groups"
        if resource == "groups"
        else ("console.schedules" if resource == "schedules" else "console.settings")
    )


@bp.post(f"/create/{RESOURCE}")
def create(resource: str) -> Any:
    """Create a VMA, vCenter login, CloudStack target, group or schedule. A refusal shows the
    API's error text on the same page, the form still filled in (secrets excepted)."""
    answer = api.call("POST", resource, json=form_body(resource, request.form))
    if answer.ok:
        flash(f"{LABELS[resource]} added.", "ok")
        return redirect(_home(resource))
    flash(answer.error, "error")
    view = groups if resource == "groups" else (schedules if resource == "schedules" else settings)
    return view(), answer.status


@bp.post(f"/delete/{RESOURCE}/<item_id>")
def delete(resource: str, item_id: str) -> Response:
    """Delete one of them."""
    return _act(
        "DELETE", f"{resource}/{item_id}", None, f"{LABELS[resource]} deleted.", _home(resource)
    )


@bp.post('/test/<any("vma-appliances","cloudstack-targets"):resource>/<item_id>')
def test_connection(resource: str, item_id: str) -> Response:
    """Check that a VMA or CloudStack target answers with the stored secrets."""
    answer = api.call("POST", f"{resource}/{item_id}/test", json={})
    body = answer.body or {}
    if answer.ok and body.get("ok", True):
        flash(f"{LABELS[resource]} answers.", "ok")
    else:
        flash(body.get("error") if answer.ok else answer.error, "error")
    return redirect(url_for("console.settings"))


def _settings(**shown: Any) -> str:
    from flask import g

    return render_template(
        "settings.html",
        vmas=api.get("vma-appliances")["items"],
        credentials=api.get("vmware-credentials")["items"],
        targets=api.get("cloudstack-targets")["items"],
        tokens=tokens.list_tokens() if g.role == Role.ADMIN.value else [],
        created=shown.get("created"),
        enrollment=shown.get("enrollment"),
    )


@bp.get("/settings")
def settings() -> str:
    """VMAs, vCenter logins, CloudStack targets, and (admins) API tokens."""
    return _settings()


@bp.post("/settings/enrollments")
def enroll_vma() -> Any:
    """A one-time enrollment code for a VMA (admins), shown once with the CA fingerprint."""
    body = {k: request.form.get(k, "") for k in ("name", "url")}
    answer = api.call("POST", "vma-enrollments", json=body)
    if not answer.ok:
        flash(answer.error, "error")
        return redirect(url_for("console.settings"))
    return _settings(enrollment=answer.body | {"oma_url": request.host_url.rstrip("/")})


@bp.post("/vma-appliances/<appliance_id>/revoke")
def revoke_vma(appliance_id: str) -> Response:
    """End a VMA's access (admins)."""
    return _act(
        "POST",
        f"vma-appliances/{appliance_id}/revoke",
        {},
        "VMA revoked: the OMA no longer calls it and its NBD connections are refused.",
        url_for("console.settings"),
    )


@bp.post("/settings/tokens")
def create_token() -> Any:
    """Create an API token (admins); its value is shown once."""
    require(Role.ADMIN)
    name, role = request.form.get("name", "").strip(), request.form.get("role", "")
    if not name or role not in {r.value for r in Role}:
        flash("name: is required; role: must be viewer, operator or admin", "error")
        return redirect(url_for("console.settings"))
    try:
        row, plaintext = tokens.create_token(name, role)
    except ConflictError as exc:
        flash(str(exc), "error")
        return redirect(url_for("console.settings"))
    return _settings(created={"name": row.name, "role": row.role, "token": plaintext})


@bp.post("/settings/tokens/<name>/revoke")
def revoke_token(name: str) -> Response:
    """Revoke an API token (admins); its sessions end at their next request."""
    require(Role.ADMIN)
    if tokens.revoke_token(name):
        flash(f"Token {name} revoked.", "ok")
    else:
        flash(f"token {name!r} does not exist or is already revoked", "error")
    return redirect(url_for("console.settings"))


@bp.route("/discovery", methods=["GET", "POST"])
def discovery() -> str:
    """Discover a vCenter's VMs through a VMA with a saved login, pick VMs to add."""
    found, error = None, None
    chosen = {
        "vma_id": request.values.get("vma_id", ""),
        "credential_id": request.values.get("credential_id", ""),
    }
    if request.method == "POST":
        body = {k: v for k, v in chosen.items() if v}
        answer = api.call("POST", "discovery", json=body)
        if answer.ok:
            found = answer.body
        else:
            error = answer.error
    return render_template(
        "discovery.html",
        vmas=api.get("vma-appliances")["items"],
        credentials=api.get("vmware-credentials")["items"],
        targets=api.get("cloudstack-targets")["items"],
        chosen=chosen,
        found=found,
        error=error,
    )


@bp.post("/discovery/add")
def discovery_add() -> Response:
    """Add the ticked VMs (discovered again through the VMA with the saved login)."""
    body: dict[str, Any] = {"vm_ids": request.form.getlist("vm_id")}
    for name in ("vma_id", "credential_id", "cloudstack_target_id"):
        if request.form.get(name):
            body[name] = request.form[name]
    answer = api.call("POST", "discovery/add", json=body)
    if not answer.ok:
        flash(answer.error, "error")
        return redirect(url_for("console.discovery"))
    added, skipped = answer.body["added"], answer.body["skipped"]
    names = ", ".join(a["name"] for a in added) or "none"
    message = f"Added {len(added)} VM(s): {names}."
    if skipped:
        message += " Skipped (already managed): " + ", ".join(s["name"] for s in skipped) + "."
    flash(message, "ok")
    return redirect(url_for("console.vms"))


@bp.get("/groups")
def groups() -> str:
    """Groups with their members, and adding VMs to them."""
    items = [api.get(f"groups/{g['id']}") for g in api.get("groups")["items"]]
    return render_template(
        "groups.html", groups=items, vms=api.get("vm-contexts", limit=500)["items"]
    )


@bp.post("/groups/<group_id>/members")
def add_member(group_id: str) -> Response:
    """Add a VM to a group."""
    body = {"vm_context_ids": [request.form.get("vm_context_id", "")]}
    return _act(
        "POST",
        f"groups/{group_id}/members",
        body,
        "VM added to the group.",
        url_for("console.groups"),
    )


@bp.post("/groups/<group_id>/members/<context_id>/remove")
def remove_member(group_id: str, context_id: str) -> Response:
    """Remove a VM from a group."""
    return _act(
        "DELETE",
        f"groups/{group_id}/members/{context_id}",
        None,
        "VM removed from the group.",
        url_for("console.groups"),
    )


@bp.get("/schedules")
def schedules() -> str:
    """Schedules, their next and last runs, and creating one."""
    return render_template(
        "schedules.html",
        schedules=api.get("schedules")["items"],
        runs=api.get("schedules/runs", limit=20)["items"],
        groups=api.get("groups")["items"],
        vms=api.get("vm-contexts", limit=500)["items"],
    )


@bp.post("/schedules/<schedule_id>/run-now")
def run_schedule(schedule_id: str) -> Response:
    """Run a schedule now."""
    return _act(
        "POST",
        f"schedules/{schedule_id}/run-now",
        {},
        "Schedule started.",
        url_for("console.schedules"),
    )
