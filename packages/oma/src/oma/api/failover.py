"""Failover: start a live or test failover (202, the worker does the work), show, list, retry,
roll back; end a test failover."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, g, jsonify, url_for
from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    Tag,
    WithJsonSchema,
    model_validator,
)

from migration_common import get_logger

from ..database.models import VmContext, Workflow, WorkflowStep
from ..database.repos import contexts
from ..errors import CloudStackError
from ..workflows import records
from ..workflows.failover import store
from ..workflows.failover import test as tests
from ..workflows.failover.target_vm import (
    TargetInvalid,
    boot_disk,
    choose_template,
    nic_plan,
    source_nics,
)
from ..workflows.replication import context_target
from .errors import ApiError
from .requests import (
    LINE_PATTERN,
    Body,
    Id,
    Line,
    NoBody,
    body,
    int_between,
    line,
    optional,
    unprocessable,
)
from .serialize import ts
from .targets import client_for

bp = Blueprint("failover", __name__, url_prefix="/api/v1")
log = get_logger(__name__)

HostName = Annotated[
    str,
    StringConstraints(max_length=63, pattern="^[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"),
    Field(description="a host name: ASCII letters, digits and hyphens, starting with a letter"),
]
NetworkMappings = Annotated[
    dict[Line, Id],
    Field(min_length=1),
    WithJsonSchema(
        {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": LINE_PATTERN,
            },
            "additionalProperties": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "pattern": LINE_PATTERN,
            },
            "description": "source network name → CloudStack network id",
        }
    ),
]
Duration = Annotated[
    int_between(tests.AUTO_END_MIN_S, tests.AUTO_END_MAX_S)
    | Annotated[
        str, StringConstraints(max_length=32, pattern="^ *([0-9]+|([0-9]+[smhdSMHD])+) *$")
    ],
    Field(description="seconds, or a duration such as 30m, 2h or 1h30m (1 s to 30 days)"),
]


class _Common(Body):
    service_offering_id: Id
    template_id: optional(Id) = None
    vm_name: optional(HostName) = None
    boot_disk_key: optional(line(32)) = None


class LiveFailover(_Common):
    """A live failover: the source is powered off after a final sync."""

    type: Literal["live"] = "live"
    network_mappings: NetworkMappings
    keep_macs: bool = True
    graceful_timeout_s: int_between(0, 86400) = 300
    force: bool = True
    verify_final_sync: bool = Field(
        True, description="the final sync reads every disk back and compares sha256"
    )
    end_test: bool = Field(False, description="end the VM's test failover first")


class TestFailover(_Common):
    """A test failover: the source keeps running; the test VM runs on copies of the replicas."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["network_mappings"]}, {"required": ["test_network_id"]}]
        }
    )

    type: Literal["test"]
    network_mappings: NetworkMappings = None  # type: ignore[assignment]
    test_network_id: Id = Field(  # type: ignore[assignment]
        None, description="an isolated network for every NIC (instead of network_mappings)"
    )
    keep_macs: bool = False
    auto_end_after: Duration | None = None

    @model_validator(mode="after")
    def _one_network(self) -> TestFailover:
        if ("network_mappings" in self.given()) == ("test_network_id" in self.given()):
            raise ValueError(
                "network_mappings: a test failover needs network_mappings or test_network_id "
                "(an isolated network for every NIC), one of them"
            )
        return self


def _kind(value: Any) -> str:
    return value.get("type", "live") if isinstance(value, dict) else "live"


class FailoverRequest(RootModel[Any]):
    """``POST /vm-contexts/{id}/failover``: live (the default) or test."""

    model_config = ConfigDict(regex_engine="python-re", hide_input_in_errors=True)

    root: Annotated[
        Annotated[LiveFailover, Tag("live")] | Annotated[TestFailover, Tag("test")],
        Discriminator(_kind),
    ]


def _params(data: LiveFailover | TestFailover) -> dict[str, Any]:
    """The failover's parameters from the validated request (names stripped)."""
    params = data.model_dump()
    for name in ("service_offering_id", "template_id", "boot_disk_key", "test_network_id"):
        if isinstance(params.get(name), str):
            params[name] = params[name].strip()
    if params.get("network_mappings"):
        params["network_mappings"] = {
            k.strip(): v.strip() for k, v in params["network_mappings"].items()
        }
    if isinstance(data, TestFailover):
        params["network_mappings"] = params["network_mappings"] or {}
        if data.auto_end_after is not None:
            try:
                params["auto_end_after"] = tests.parse_duration(data.auto_end_after)
            except ValueError as exc:
                raise unprocessable("auto_end_after", str(exc)) from exc
    return params


def _isolated(ctx: VmContext, params: dict[str, Any]) -> None:
    """A test's ``test_network_id`` as its mapping: every source network → that network."""
    network = params.get("test_network_id")
    if network:
        sources = [n.get("network") or n.get("network_name") for n in source_nics(ctx.spec or {})]
        params["network_mappings"] = {str(s): network for s in sources} or {"(none)": network}


def _check_target(ctx: VmContext, params: dict[str, Any]) -> None:
    """Refuse now (422 naming the field) what the ``validate`` step would refuse from the
    VM's spec: NICs sharing a network, an unknown boot disk, no usable template. The
    template check asks the context's CloudStack target; when none is configured or it does
    not answer, ``validate`` checks again."""
    spec = ctx.spec or {}
    keys = [d.disk_key for d in contexts.list_disks(ctx.id)]
    try:
        nic_plan(spec, params["network_mappings"], params["keep_macs"])
        if keys:
            boot_disk(keys, spec, params["boot_disk_key"])
        target = context_target(ctx)
        if target is None:
            return
        cs = client_for(target)
        try:
            templates = cs.list_templates(zone_id=target.zone_id)
        except CloudStackError as exc:
            log.warning("template check skipped", vm_context_id=ctx.id, error=str(exc))
            return
        finally:
            cs.close()
        choose_template(templates, spec, params["template_id"])
    except TargetInvalid as exc:
        raise unprocessable(exc.field, exc.message) from exc


def _step(row: WorkflowStep) -> dict[str, Any]:
    data = row.data or {}
    status = row.status
    if status == "done" and data.get("skipped"):
        status = "skipped"
    duration = (
        round((row.finished_at - row.started_at).total_seconds(), 3)
        if row.started_at and row.finished_at and status != "running"
        else None
    )
    return {
        "name": row.name,
        "position": row.position,
        "status": status,
        "attempts": row.attempts,
        "started_at": ts(row.started_at),
        "finished_at": ts(row.finished_at) if status != "running" else None,
        "duration_seconds": duration,
        "waiting_for": data.get("_waiting") if row.status == "running" else None,
        "error": row.error,
    }


def _workflow(wf: Workflow) -> dict[str, Any]:
    return {
        "id": wf.id,
        "status": store.status_of(wf),
        "error": wf.error,
        "created_at": ts(wf.created_at),
        "updated_at": ts(wf.updated_at),
        "finished_at": ts(wf.finished_at),
        "steps": [_step(s) for s in records.steps_of(wf.id)],
    }


def test_record(wf: Workflow) -> dict[str, Any]:
    """A test failover as the API shows it: params, steps with timing, result, its end."""
    end = tests.end_of(wf.id)
    body = {"vm_context_id": wf.context_id, "type": "test", **_workflow(wf)}
    if end is not None and end.status in records.ACTIVE:
        body["status"] = "ending"
    at = tests.auto_end_at(wf)
    body["params"] = wf.params or {}
    body["result"] = wf.result
    body["auto_end_at"] = ts(at) if at is not None else None
    body["end"] = _workflow(end) if end is not None else None
    return body


def failover_record(wf: Workflow) -> dict[str, Any]:
    """A failover as the API shows it: params, steps with timing, result, its rollback."""
    rollback = store.rollback_of(wf.id)
    body = {"vm_context_id": wf.context_id, "type": "live", **_workflow(wf)}
    if rollback is not None and rollback.status in records.ACTIVE:
        body["status"] = "rolling_back"
    sync = records.step_data(wf.id, "final_sync")
    body["params"] = wf.params or {}
    body["final_sync_job_id"] = sync.get("job_id")
    body["result"] = wf.result
    body["rollback"] = _workflow(rollback) if rollback is not None else None
    return body


def _accepted(wf: Workflow, resumed: bool) -> Any:
    body = failover_record(wf)
    body["resumed"] = resumed
    response = jsonify(body)
    response.headers["Location"] = url_for(".get_failover", failover_id=wf.id)
    return response, 202


@bp.post("/vm-contexts/<context_id>/failover")
@body(FailoverRequest)
def start_failover(context_id: str) -> Any:
    """Start a live failover (or resume the VM's failed one): ``{"type": "live",
    "network_mappings": {"<source network>": "<network id>"}, "service_offering_id",
    "template_id"?, "keep_macs"?, "graceful_timeout_s"?, "force"?, "verify_final_sync"?
    (default true: the final sync reads every disk back and compares sha256), "vm_name"?,
    "boot_disk_key"?, "end_test"?}`` → 202 with the failover (``boot_disk_key`` and
    ``template_id`` default to the VM's ``failover_defaults``); 422 naming the field when two
    NICs map to one network, the boot disk is unknown or no template fits the guest OS; 409
    when one is active or the VM is not ready_for_failover, and 409 naming ``end_test`` while a
    test failover is in place (``"end_test": true`` ends it first, the failover waits for that).

    ``{"type": "test", "network_mappings" | "test_network_id", "service_offering_id",
    "template_id"?, "keep_macs"? (default false), "vm_name"? (default ``<vm>-test``),
    "boot_disk_key"?, "auto_end_after"? (seconds or ``30m``, ``2h``, ``1h30m``)}`` starts a test
    failover → 202 with the test (``Location: /api/v1/test-failovers/{id}``); 409 while a
    test is in place or any failover of the VM is at work."""
    ctx = contexts.get_context(context_id)
    params = _params(g.body.root)
    for name, value in (ctx.failover_defaults or {}).items():  # the operator's per-VM choices
        if params.get(name) is None:
            params[name] = value
    if params["type"] == "test":
        _isolated(ctx, params)
        _check_target(ctx, params)
        wf = tests.start_test(context_id, params)
        response = jsonify(test_record(wf))
        response.headers["Location"] = url_for(".get_test_failover", test_id=wf.id)
        return response, 202
    end_test = params.pop("end_test")
    if ctx.state == "failed_over_test":
        current = tests.latest_test(context_id)
        if not end_test:
            raise ApiError(
                "conflict",
                f"VM {ctx.name} has a test failover in place"
                + (f" ({current.id})" if current else "")
                + "; end it first (POST /api/v1/vm-contexts/{id}/test-failover/end) or send "
                '"end_test": true',
                409,
                "end_test",
            )
        _check_target(ctx, params)
        end, wf = tests.failover_after_test_end(context_id, params)
        response = jsonify(failover_record(wf) | {"resumed": False, "test_end_id": end.id})
        response.headers["Location"] = url_for(".get_failover", failover_id=wf.id)
        return response, 202
    _check_target(ctx, params)
    wf, resumed = store.start_failover(context_id, params)
    return _accepted(wf, resumed)


@bp.get("/test-failovers/<test_id>")
def get_test_failover(test_id: str) -> Any:
    """One test failover: status (``ending``, ``ended`` once its end finished), steps with
    timing, result (test VM, volumes, snapshots), ``auto_end_at`` and its end's steps."""
    return jsonify(test_record(tests.get_test(test_id)))


@bp.get("/vm-contexts/<context_id>/test-failovers")
def list_test_failovers(context_id: str) -> Any:
    """A VM's test failovers, newest first."""
    contexts.get_context(context_id)
    return jsonify({"items": [test_record(w) for w in tests.list_tests(context_id)]})


@bp.post("/vm-contexts/<context_id>/test-failover/end")
@body(NoBody)
def end_test_failover(context_id: str) -> Any:
    """End the VM's test failover (202; a failed end is resumed): the test VM is destroyed, its
    volumes and snapshots deleted, the VM returns to ready_for_failover; 409 when no test is in
    place or it is still starting."""
    contexts.get_context(context_id)
    end = tests.end_test(context_id)
    record = test_record(tests.get_test(str((end.params or {})["test_id"])))
    response = jsonify(record)
    response.headers["Location"] = url_for(".get_test_failover", test_id=record["id"])
    return response, 202


@bp.get("/vm-contexts/<context_id>/failovers")
def list_failovers(context_id: str) -> Any:
    """A VM's failovers, newest first, each with its steps."""
    contexts.get_context(context_id)
    return jsonify({"items": [failover_record(w) for w in store.list_failovers(context_id)]})


@bp.get("/failovers/<failover_id>")
def get_failover(failover_id: str) -> Any:
    """One failover: status, steps with status and timing, result (downtime, bytes)."""
    return jsonify(failover_record(store.get_failover(failover_id)))


@bp.post("/failovers/<failover_id>/retry")
@body(NoBody)
def retry_failover(failover_id: str) -> Any:
    """Resume a failed failover from its failed step (202); 409 unless it failed."""
    return _accepted(store.retry_failover(failover_id), True)


@bp.post("/failovers/<failover_id>/rollback")
@body(NoBody)
def rollback_failover(failover_id: str) -> Any:
    """Undo a failed or completed failover (202): destroy the target VM (replicas kept),
    re-attach the replicas to the OMA with their exports, power the source back on."""
    _wf, resumed = store.start_rollback(failover_id)
    body = failover_record(store.get_failover(failover_id))
    body["resumed"] = resumed
    return jsonify(body), 202
