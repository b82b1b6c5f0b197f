"""``GET /api/v1/openapi.json``: an OpenAPI 3.0 document built from the registered routes.

Each operation's summary and description come from its view's docstring, so the document
never drifts from the code; security is bearer auth except on the health endpoints.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel

bp = Blueprint("openapi", __name__)

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "nullable": True},
            },
            "required": ["code", "message", "field"],
        }
    },
}
_STATUS_TEXT = {
    "200": "OK",
    "201": "Created",
    "202": "Accepted (the worker does the work)",
    "204": "No content",
    "400": "Invalid request (error.field names the culprit)",
    "401": "Missing or invalid token",
    "403": "Role not allowed",
    "404": "Not found",
    "410": "Gone (an enrollment code past its expiry)",
    "409": "Conflict (active job, duplicate name, wrong state, disk too large for the target)",
    "422": "The request fits its schema but a rule beyond it refuses it (error.field names it)",
    "502": "Upstream error",
    "503": "The database cannot serve the request now (retry later)",
}


# what validation.reject_bad_characters lets through: no control characters, no surrogates
PATH_PARAM = {"type": "string", "minLength": 1, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"}


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for name in re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule):
        params.append({"name": name, "in": "path", "required": True, "schema": PATH_PARAM})
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule), params


_REF = "#/components/schemas/{model}"


def _component(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """A $ref to ``model``'s JSON schema, added (with the models it uses) to ``components``."""
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _query_params(model: type[BaseModel], components: dict[str, Any]) -> list[dict[str, Any]]:
    """One OpenAPI query parameter per field of ``model``."""
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in prop.items() if k != "title"},
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def build_document() -> dict[str, Any]:
    """The OpenAPI document of the current app."""
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {"Error": _ERROR}
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint == "static" or not (
            rule.rule.startswith("/api/") or rule.rule in ("/health", "/metrics")
        ):
            continue
        view = current_app.view_functions[rule.endpoint]
        doc = (view.__doc__ or "").strip()
        summary = doc.split("\n")[0].rstrip(".")
        path, params = _path(rule.rule)
        from .auth import PUBLIC_PATHS

        public = path in PUBLIC_PATHS
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            codes = {
                "GET": ["200"],
                "POST": ["200", "201", "202"],
                "PATCH": ["200"],
                "PUT": ["200"],
                "DELETE": ["202", "204"],
            }[method]
            responses: dict[str, Any] = {c: {"description": _STATUS_TEXT[c]} for c in codes}
            if media := getattr(view, "media_type", None):  # e.g. /metrics: text/plain
                responses["200"]["content"] = {media: {"schema": {"type": "string"}}}
            for code in ("400", "401", "403", "404", "409", "410", "422", "502", "503"):
                if public and code == "401":
                    continue
                responses[code] = {
                    "description": _STATUS_TEXT[code],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint.replace('.', '_')}_{method.lower()}",
                "summary": summary,
                "description": doc,
                "tags": [rule.endpoint.split(".")[0]],
                "parameters": params,
                "responses": responses,
            }
            if query := getattr(view, "query_model", None):
                op["parameters"] = params + _query_params(query, components)
            if method in ("POST", "PATCH", "PUT"):
                model = getattr(view, "request_model", None)
                schema = _component(model, components) if model else None
                op["requestBody"] = {
                    "required": schema is not None,
                    "content": {"application/json": {"schema": schema or {"type": "object"}}},
                }
            if public:
                op["security"] = []
            paths.setdefault(path, {})[method.lower()] = op
    import oma

    return {
        "openapi": "3.1.0",
        "info": {"title": "OSSEA-Migrate OMA API", "version": oma.__version__},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": dict(sorted(components.items())),
        },
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
    }


@bp.get("/api/v1/openapi.json")
def openapi_document() -> Any:
    """The OpenAPI 3.0 description of this API."""
    return jsonify(build_document())
