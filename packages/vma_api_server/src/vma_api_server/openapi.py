"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json``.

Request schemas come from the pydantic models in :mod:`schemas`; progress schemas from
migration_common's contract models, so the document cannot drift from what is validated.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from migration_common import DiskProgress, JobProgress

from .schemas import (
    BandwidthIn,
    DiscoverIn,
    JobsQuery,
    LogQuery,
    PowerOffIn,
    ProgressQuery,
    ReplicateIn,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    *,
    body: str | None = None,
    ok: dict[str, Any] | None = None,
    status: str = "200",
    public: bool = False,
    params: list[str] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            status: _json(ok or {"type": "object"}),
            "default": _json(_ref("Error"), "Error: {error: {code, message, field}}"),
        },
    }
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if public:
        op["security"] = []
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": PATH_PARAM} for p in params
        ]
    return op


# what the API accepts in a path segment: no control characters (job ids and VM ids)
PATH_PARAM = {"type": "string", "minLength": 1, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"}


def _query(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One query parameter per field of ``model`` (the model validates them)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in prop.items() if k != "title"},
        }
        for name, prop in schema["properties"].items()
    ]


def _log_op() -> dict[str, Any]:
    """``GET /jobs/{job_id}/log``: also 410 when job retention removed the log."""
    op = _op(
        "End of the job's migratekit log",
        ok={
            "type": "object",
            "properties": {
                "job_id": {"type": "string"},
                "log": {"type": "string"},
                "truncated": {"type": "boolean"},
                "size": {"type": "integer"},
            },
        },
        params=["job_id"],
    )
    op["parameters"] += _query(LogQuery)
    op["responses"]["404"] = _json(_ref("Error"), "No such job (code job_not_found)")
    op["responses"]["410"] = _json(
        _ref("Error"),
        "The job finished more than VMA_JOB_RETENTION_DAYS ago and its directory, log "
        "included, was pruned (code log_pruned)",
    )
    return op


@cache
def document() -> dict[str, Any]:
    """Build (once) and return the OpenAPI document."""
    schemas: dict[str, Any] = {}
    for model in (ReplicateIn, DiscoverIn, PowerOffIn, BandwidthIn, DiskProgress, JobProgress):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                },
            }
        },
    }
    job = {
        "type": "object",
        "properties": {
            k: {}
            for k in ("job_id", "vm_id", "status", "pid", "error", "created_at", "finished_at")
        }
        | {"progress": _ref("JobProgress")},
    }
    vm = ["vm_id"]
    paths = {
        "/api/v1/health": {"get": _op("Liveness and job counts", public=True)},
        "/api/v1/openapi.json": {"get": _op("This document")},
        "/metrics": {
            "get": {
                "summary": "Jobs, bytes moved, throughput, vCenter reachability (Prometheus)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "default": _json(_ref("Error"), "Error: {error: {code, message, field}}"),
                },
            }
        },
        "/api/v1/discover": {"post": _op("List the VMs of a vCenter", body="DiscoverIn")},
        "/api/v1/vms/{vm_id}": {"get": _op("One VM", params=vm)},
        "/api/v1/vms/{vm_id}/power": {"get": _op("Power state", params=vm)},
        "/api/v1/vms/{vm_id}/power-off": {
            "post": _op(
                "Graceful shutdown with a real wait, then forced", body="PowerOffIn", params=vm
            )
        },
        "/api/v1/vms/{vm_id}/power-on": {"post": _op("Power on", params=vm)},
        "/api/v1/vms/{vm_id}/cbt": {"get": _op("Change tracking status", params=vm)},
        "/api/v1/vms/{vm_id}/cbt/enable": {"post": _op("Enable change tracking", params=vm)},
        "/api/v1/replicate": {
            "post": _op(
                "Queue a replication job",
                body="ReplicateIn",
                status="202",
                ok={
                    "type": "object",
                    "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}},
                },
            )
        },
        "/api/v1/jobs": {
            "get": {
                **_op("Jobs, newest first"),
                "parameters": _query(JobsQuery),
            }
        },
        "/api/v1/jobs/{job_id}": {"get": _op("One job with progress", ok=job, params=["job_id"])},
        "/api/v1/jobs/{job_id}/log": {"get": _log_op()},
        "/api/v1/jobs/{job_id}/stop": {"post": _op("Stop a job", ok=job, params=["job_id"])},
        "/api/v1/jobs/{job_id}/bandwidth": {
            "get": _op("The job's bandwidth limit", params=["job_id"]),
            "put": _op(
                "Set the job's bandwidth limit (applied while it runs)",
                body="BandwidthIn",
                params=["job_id"],
            ),
        },
        "/api/v1/progress/{job_id}/update": {
            "post": _op(
                "One disk's progress (from migratekit)", body="DiskProgress", params=["job_id"]
            )
        },
        "/api/v1/progress/{job_id}": {
            "get": _op("A job's progress", ok=_ref("JobProgress"), params=["job_id"])
        },
        "/api/v1/progress": {
            "get": {
                **_op(
                    "Progress of many jobs (?job_ids=a,b,c)",
                    ok={
                        "type": "object",
                        "properties": {
                            "jobs": {"type": "array", "items": _ref("JobProgress")},
                            "not_found": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                ),
                "parameters": _query(ProgressQuery),
            }
        },
    }
    import vma_api_server

    return {
        "openapi": "3.1.0",
        "info": {"title": "OSSEA-Migrate VMA API", "version": vma_api_server.__version__},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
