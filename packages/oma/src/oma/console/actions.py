"""Actions on VMs and jobs: replicate, stop, test and live failover, end test, rollback, retry,
cleanup. Each one is the API's request; a refusal shows the API's error text."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..workflows.failover.target_vm import source_nics
from . import api_calls as api
from .blueprint import bp
from .session import local_path


def _back(default: str) -> str:
    """Where to go after an action: the form's ``next`` when it is a local path."""
    return local_path(request.form.get("next")) or default


def _act(method: str, path: str, body: Any, done: str, back: str) -> Response:
    answer = api.call(method, path, json=body)
    if answer.ok:
        flash(done, "ok")
    else:
        flash(answer.error, "error")
    return redirect(_back(back))


@bp.post("/vms/<context_id>/replicate")
def replicate(context_id: str) -> Response:
    """Start a replication (``type`` auto, full or incremental; ``verify`` optional)."""
    body: dict[str, Any] = {
        "vm_context_id": context_id,
        "type": request.form.get("type") or "auto",
    }
    if request.form.get("verify"):
        body["verify"] = True
    return _act(
        "POST",
        "replications",
        body,
        "Replication requested.",
        url_for("console.vm", context_id=context_id),
    )


@bp.post("/jobs/<job_id>/stop")
def stop_job(job_id: str) -> Response:
    """Stop a replication."""
    return _act(
        "POST", f"replications/{job_id}/stop", {}, "Stop requested.", url_for("console.overview")
    )


@bp.post("/vms/<context_id>/test-failover/end")
def end_test(context_id: str) -> Response:
    """End the VM's test failover."""
    return _act(
        "POST",
        f"vm-contexts/{context_id}/test-failover/end",
        {},
        "Ending the test failover.",
        url_for("console.vm", context_id=context_id),
    )


@bp.post("/failovers/<failover_id>/rollback")
def rollback(failover_id: str) -> Response:
    """Roll a live failover back."""
    return _act(
        "POST", f"failovers/{failover_id}/rollback", {}, "Rollback started.", url_for(".vms")
    )


@bp.post("/failovers/<failover_id>/retry")
def retry(failover_id: str) -> Response:
    """Resume a failed failover from its failed step."""
    return _act("POST", f"failovers/{failover_id}/retry", {}, "Failover resumed.", url_for(".vms"))


@bp.post("/vms/<context_id>/cleanup")
def cleanup(context_id: str) -> Response:
    """Remove the VM's replica volumes and exports."""
    return _act(
        "POST",
        f"vm-contexts/{context_id}/cleanup",
        {},
        "Cleanup started.",
        url_for("console.vm", context_id=context_id),
    )


def _target_id(vm: dict[str, Any]) -> str | None:
    if vm.get("cloudstack_target_id"):
        return str(vm["cloudstack_target_id"])
    targets = api.get("cloudstack-targets")["items"]
    default = [t for t in targets if t.get("is_default")] or targets
    return str(default[0]["id"]) if default else None


def _choices(target_id: str | None) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """Networks, service offerings and templates of the target (filled from CloudStack)."""
    empty: dict[str, list[dict[str, Any]]] = {"networks": [], "offerings": [], "templates": []}
    if target_id is None:
        return empty, "no CloudStack target is registered (Settings → CloudStack targets)"
    networks = api.call("GET", f"cloudstack-targets/{target_id}/networks")
    offerings = api.call("GET", f"cloudstack-targets/{target_id}/offerings")
    templates = api.call("GET", f"cloudstack-targets/{target_id}/templates")
    for answer in (networks, offerings, templates):
        if not answer.ok:
            return empty, answer.error
    return {
        "networks": networks.body["items"],
        "offerings": offerings.body["service_offerings"],
        "templates": templates.body["items"],
    }, None


def _failover_body(kind: str, form: Any, nics: list[dict[str, Any]]) -> dict[str, Any]:
    """The API request from the form (the API validates it and names a bad field)."""
    body: dict[str, Any] = {
        "type": kind,
        "service_offering_id": form.get("service_offering_id", ""),
        "keep_macs": bool(form.get("keep_macs")),
    }
    sources = [str(n.get("network") or n.get("network_name")) for n in nics]
    body["network_mappings"] = {
        source: form.get(f"network_{i}", "") for i, source in enumerate(dict.fromkeys(sources))
    }
    for name in ("template_id", "vm_name", "boot_disk_key"):
        if form.get(name):
            body[name] = form[name]
    if kind == "test":
        if form.get("auto_end_after"):
            body["auto_end_after"] = form["auto_end_after"]
        return body
    timeout = form.get("graceful_timeout_s", "")
    if timeout:
        body["graceful_timeout_s"] = int(timeout) if timeout.isdigit() else timeout
    body["force"] = bool(form.get("force"))
    body["end_test"] = bool(form.get("end_test"))
    body["verify_final_sync"] = bool(form.get("verify_final_sync"))
    return body


@bp.route("/vms/<context_id>/failover", methods=["GET", "POST"])
def failover(context_id: str) -> Any:
    """The failover form (``?type=live`` or ``test``), its pickers filled from the target."""
    kind = "test" if request.values.get("type") == "test" else "live"
    vm = api.get(f"vm-contexts/{context_id}", jobs=0, events=0)
    nics = source_nics(vm.get("spec") or {})
    choices, problem = _choices(_target_id(vm))
    error, status = None, 200
    if request.method == "POST":
        answer = api.call(
            "POST",
            f"vm-contexts/{context_id}/failover",
            json=_failover_body(kind, request.form, nics),
        )
        if answer.ok:
            flash(("Test failover" if kind == "test" else "Live failover") + " started.", "ok")
            return redirect(url_for("console.vm", context_id=context_id))
        error, status = answer.error, answer.status
    networks = list(dict.fromkeys(str(n.get("network") or n.get("network_name")) for n in nics))
    return render_template(
        "failover.html",
        kind=kind,
        vm=vm,
        networks=networks,
        choices=choices,
        problem=problem,
        error=error,
        form=request.form,
    ), status
