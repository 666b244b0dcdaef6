"""`GET /services/{service}/openapi` — a service's OpenAPI 3.1 document as Restate 1.7 builds it
(`restate_types::schema::metadata::openapi`), from what discovery recorded per handler — and the
admin API's own spec (`GET /openapi`), a packaged copy of Restate's.

Restate serialises the document through `serde_json::Value` without `preserve_order`, so every
object's keys come out sorted; `json.dumps(..., sort_keys=True)` gives the same bytes.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

from schemas.registry import HandlerRecord, ServiceRecord

_DOCS = "https://docs.restate.dev/invoke/http"
_GENERIC_ERROR = {"$ref": "#/components/responses/GenericError"}
_NOT_FOUND = {"$ref": "#/components/responses/InvocationNotFoundError"}
_NOT_READY = {"$ref": "#/components/responses/InvocationNotReadyError"}
_SEND = {"$ref": "#/components/responses/Send"}


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def service_openapi(service: ServiceRecord, ingress_url: str) -> dict[str, Any]:
    keyed = service.ty in ("VirtualObject", "Workflow")
    workflow = service.ty == "Workflow"
    name = service.name
    segment = f"{name}/{{key}}" if keyed else name
    call_params = [_param("key")] if keyed else []
    lookup_params = list(call_params)
    if not workflow:
        call_params.append(_param("idempotencyKeyHeader"))
        lookup_params.append(_param("idempotencyKeyPath"))
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for h in service.handlers:
        if not h.public:
            continue  # Restate leaves private handlers out of the document
        body = _request_body(h, schemas)
        response = _response(h, schemas)
        doc = h.documentation
        ext = {"x-restate-extensions": dict(h.metadata)} if h.metadata else {}

        def op(
            summary_extra: dict[str, Any], h: HandlerRecord = h, ext: dict[str, Any] = ext
        ) -> dict[str, Any]:
            return {"summary": h.name, **summary_extra, **ext}

        call = op(
            {
                "operationId": h.name,
                "description": doc or f"Call {name} handler {h.name} and wait for response",
            }
        )
        call["parameters"] = list(call_params)
        if body is not None:
            call["requestBody"] = body
        call["responses"] = {"200": response, "default": _GENERIC_ERROR}
        paths[f"/restate/call/{segment}/{h.name}"] = {"post": call}

        send = op(
            {"operationId": f"{h.name}Send", "description": doc or f"Send request to {name} handler {h.name}"}
        )
        send["parameters"] = [*call_params, _param("delay")]
        send["tags"] = ["Send"]
        if body is not None:
            send["requestBody"] = body
        send["responses"] = {"200": _SEND, "202": _SEND, "default": _GENERIC_ERROR}
        paths[f"/restate/send/{segment}/{h.name}"] = {"post": send}

        if workflow and h.ty != "Workflow":
            continue  # a workflow is attached to by its `run` handler only
        if workflow:
            attach_path = f"/restate/workflow/{name}/{{key}}/attach"
            output_path = f"/restate/workflow/{name}/{{key}}/output"
            lookup = "with a workflow target"
            attach_doc = (
                doc or f"Attach to the running instance of {name}/{h.name} workflow and wait to finish"
            )
            output_doc = doc or f"Get output of the {name}/{h.name} workflow"
        else:
            attach_path = f"/restate/invocation/{segment}/{h.name}/{{idempotencyKey}}/attach"
            output_path = f"/restate/invocation/{segment}/{h.name}/{{idempotencyKey}}/output"
            lookup = "with idempotency information"
            attach_doc = doc or (
                f"Attach to a running instance of {name}/{h.name} using the idempotency key "
                "and wait to finish"
            )
            output_doc = doc or f"Get output of a running instance of {name}/{h.name} using idempotency key"
        attach = op({"operationId": f"{h.name}Attach", "deprecated": True})
        attach["description"] = (
            f"Deprecated: use POST /restate/lookup {lookup} to obtain an invocation id, then "
            f"GET /restate/attach/{{invocationId}}. {attach_doc}"
        )
        attach["parameters"] = list(lookup_params)
        attach["tags"] = ["Attach"]
        attach["responses"] = {"200": response, "404": _NOT_FOUND, "default": _GENERIC_ERROR}
        paths[attach_path] = {"get": attach}
        output = op({"operationId": f"{h.name}Output", "deprecated": True})
        # Restate's own wording, doubled "with" included, for handlers with an idempotency key.
        output_lookup = lookup if workflow else f"with {lookup}"
        output["description"] = (
            f"Deprecated: use POST /restate/lookup {output_lookup} to obtain an invocation id, then "
            f"GET /restate/output/{{invocationId}}. {output_doc}"
        )
        output["parameters"] = list(lookup_params)
        output["tags"] = ["Get Output"]
        output["responses"] = {
            "200": response,
            "404": _NOT_FOUND,
            "470": _NOT_READY,
            "default": _GENERIC_ERROR,
        }
        paths[output_path] = {"get": output}

    info: dict[str, Any] = {"title": name, "version": str(service.revision)}
    if service.documentation is not None:
        info["description"] = service.documentation
    if service.metadata:
        info["x-restate-extensions"] = dict(service.metadata)
    components = _restate_components()
    components["schemas"] = {**schemas, **components["schemas"]}
    return {
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"description": "Restate Ingress URL", "url": _with_slash(ingress_url)}],
        "paths": paths,
        "components": components,
        "tags": _TAGS,
    }


def _with_slash(url: str) -> str:
    """An http::Uri with an empty path prints as `scheme://authority/`."""
    return url if re.match(r"^[a-z]+://[^/]+/", url) else f"{url}/"


def _request_body(h: HandlerRecord, schemas: dict[str, Any]) -> dict[str, Any] | None:
    if h.input_content_type is None:
        return None  # only "no body" is accepted
    content: dict[str, Any] = {}
    if h.input_json_schema is not None:
        schema = json.loads(h.input_json_schema)
        schemas[f"{h.name}Request"] = _normalize_refs(f"{h.name}Request", {} if schema is True else schema)
        content = {"schema": _schema_ref(f"{h.name}Request")}
    return {"content": {h.input_content_type: content}, "required": h.input_required}


def _response(h: HandlerRecord, schemas: dict[str, Any]) -> dict[str, Any]:
    if h.output_content_type is None:
        return {"description": "Empty"}
    content: dict[str, Any] = {}
    if h.output_json_schema is not None:
        schemas[f"{h.name}Response"] = _normalize_refs(f"{h.name}Response", json.loads(h.output_json_schema))
        content = {"schema": _schema_ref(f"{h.name}Response")}
    return {"content": {h.output_content_type: content}, "description": ""}


def _normalize_refs(schema_name: str, schema: Any) -> Any:
    """Local `$ref`s (`#/...`) of a handler's schema point into its place under components."""
    if isinstance(schema, list):
        return [_normalize_refs(schema_name, v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _normalize_refs(schema_name, v) for k, v in schema.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        out["$ref"] = f"#/components/schemas/{schema_name}{ref.lstrip('#')}"
    return out


def _restate_components() -> dict[str, Any]:
    error_content = {"schema": _schema_ref("RestateError")}
    return {
        "parameters": {
            "delay": {
                "description": "Specify the delay to execute the operation, for more info check the "
                "[delay documentation](https://docs.restate.dev/invoke/http#sending-a-delayed-message-over-http)",
                "example": "10s",
                "in": "query",
                "name": "delay",
                "required": False,
                "schema": {"type": "string"},
            },
            "key": {"in": "path", "name": "key", "required": True, "schema": {"type": "string"}},
            "idempotencyKeyHeader": {
                "description": "Idempotency key to execute the request, for more details checkout the "
                "[idempotency key documentation](https://docs.restate.dev/invoke/http#invoke-a-handler-idempotently).",
                "in": "header",
                "name": "idempotency-key",
                "required": False,
                "schema": {"type": "string"},
            },
            "idempotencyKeyPath": {
                "description": "Idempotency key used to execute the original request, for more details "
                "checkout the [idempotency key documentation](https://docs.restate.dev/invoke/http#invoke-a-handler-idempotently).",
                "in": "path",
                "name": "idempotencyKey",
                "required": True,
                "schema": {"type": "string"},
            },
        },
        "responses": {
            "GenericError": {
                "content": {
                    "application/json": {
                        **error_content,
                        "example": {"code": 500, "message": "Internal server error", "source": "invocation"},
                    }
                },
                "description": "Error response",
            },
            "InvocationNotFoundError": {
                "content": {
                    "application/json": {
                        **error_content,
                        "example": {"message": "invocation not found", "source": "ingress"},
                    }
                },
                "description": "Invocation not found",
            },
            "InvocationNotReadyError": {
                "content": {
                    "application/json": {
                        **error_content,
                        "example": {
                            "message": "the invocation exists but has not completed yet",
                            "source": "ingress",
                        },
                    }
                },
                "description": "Invocation still running, output is not ready yet",
            },
            "Send": {
                "content": {
                    "application/json": {
                        "example": {
                            "invocationId": "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hbz",
                            "status": "Accepted",
                        },
                        "schema": _SEND_SCHEMA,
                    }
                },
                "description": "Send response",
            },
        },
        "schemas": {"RestateError": _ERROR_SCHEMA},
    }


_SEND_SCHEMA = {
    "type": "object",
    "title": "RestateSendResponse",
    "properties": {
        "invocationId": {"type": "string"},
        "status": {"type": "string", "enum": ["Accepted", "PreviouslyAccepted"]},
        "executionTime": {
            "type": "string",
            "format": "date-time",
            "description": "Time when the invocation will be executed, in case 'delay' is used",
        },
    },
    "required": ["invocationId", "status"],
    "additionalProperties": False,
}

_ERROR_SCHEMA = {
    "type": "object",
    "title": "RestateError",
    "description": "Generic error used by Restate to propagate Terminal errors/exceptions back to callers",
    "properties": {
        "code": {"type": "number", "title": "error code"},
        "message": {"type": "string", "title": "Error message"},
        "source": {
            "type": "string",
            "title": "Error source",
            "description": "Discriminates errors generated by the ingress from the terminal outcome of "
            "the invocation. 'ingress' errors carry a Restate-controlled HTTP status code following the "
            "usual HTTP semantics, while 'invocation' errors carry a user-controlled status code. Also "
            "available in the 'x-restate-error-source' response header.",
            "enum": ["ingress", "invocation"],
        },
        "stacktrace": {"type": "string", "title": "Stacktrace of the error"},
        "metadata": {
            "type": "object",
            "title": "Additional metadata map",
            "additionalProperties": {"type": "string"},
        },
    },
    "required": ["message", "source"],
    "additionalProperties": False,
}

_TAGS = [
    {"name": name, "description": description, "externalDocs": {"description": None, "url": _DOCS}}
    for name, description in (
        ("Request Response", "Request response to handler"),
        ("Send", "Send to handler"),
        ("Attach", "Attach to invocation"),
        ("Get Output", "Get invocation output"),
    )
]


# Operations of Restate 1.7.12's admin API that kinvoke does not serve (404): it has neither
# virtual queues nor limiter rules (its `sys_vqueue*` and `sys_rules` tables stay empty).
UNSERVED = frozenset(
    {
        ("put", "/limits/rules"),
        ("post", "/limits/rules/bulk-delete"),
        ("post", "/vqueues/{vqueue_id}/pause"),
        ("post", "/vqueues/{vqueue_id}/resume"),
    }
)


_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _query(name: str, description: str, schema: dict[str, Any] = _STRING) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "required": False, "schema": schema}


_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "500": {"$ref": "#/components/responses/InternalServerError"},
}
_KINVOKE_NOTE = " kinvoke's own: Restate 1.7.12 has no such endpoint (its CLI lists invocations with SQL)."
# Operations kinvoke serves beyond Restate 1.7.12's (`admin_api/introspection/rest.py`).
KINVOKE_PATHS: dict[str, Any] = {
    "/invocations": {
        "get": {
            "tags": ["invocation"],
            "summary": "List invocations",
            "description": "Invocations oldest first (creation time, then id), filtered and paged."
            + _KINVOKE_NOTE,
            "operationId": "list_invocations",
            "parameters": [
                _query("service", "Target service names (comma-separated or repeated)."),
                _query("handler", "Target handler names (comma-separated or repeated)."),
                _query("key", "Virtual object / workflow keys (comma-separated or repeated)."),
                _query("deployment", "Pinned (or last attempt's) deployment ids."),
                _query("idempotency_key", "Idempotency keys."),
                _query(
                    "status",
                    "Statuses: pending, ready, running, backing-off, suspended, completed "
                    "(comma-separated or repeated).",
                ),
                _query(
                    "created_after",
                    "Only invocations created after this time.",
                    {"type": "string", "format": "date-time"},
                ),
                _query(
                    "created_before",
                    "Only invocations created before this time.",
                    {"type": "string", "format": "date-time"},
                ),
                _query(
                    "limit",
                    "Page size, 1 to 1000 (default 100).",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                ),
                _query("page_token", "The `next_page_token` of the previous page."),
            ],
            "responses": {
                "200": {
                    "description": "",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ListInvocationsResponse"}
                        }
                    },
                },
                **_ERRORS,
            },
        }
    },
    "/invocations/{invocation_id}": {
        "get": {
            "tags": ["invocation"],
            "summary": "Get an invocation",
            "description": "An invocation's status, as `GET /invocations` lists it." + _KINVOKE_NOTE,
            "operationId": "get_invocation",
            "parameters": [
                {
                    "name": "invocation_id",
                    "in": "path",
                    "description": "Invocation identifier.",
                    "required": True,
                    "schema": _STRING,
                }
            ],
            "responses": {
                "200": {
                    "description": "",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Invocation"}}},
                },
                "404": {"$ref": "#/components/responses/NotFound"},
                **_ERRORS,
            },
        }
    },
}
KINVOKE_SCHEMAS: dict[str, Any] = {
    "Invocation": {
        "type": "object",
        "required": [
            "id",
            "target",
            "target_service_name",
            "target_handler_name",
            "status",
            "created_at",
            "modified_at",
            "trace_id",
            "deployment_id",
            "retry_count",
        ],
        "properties": {
            "id": _STRING,
            "target": _STRING,
            "target_service_name": _STRING,
            "target_handler_name": _STRING,
            "target_service_key": _NULLABLE_STRING,
            "status": {
                "type": "string",
                "enum": ["pending", "ready", "running", "backing-off", "suspended", "completed"],
            },
            "created_at": {"type": "string", "format": "date-time"},
            "modified_at": {"type": "string", "format": "date-time"},
            "trace_id": _STRING,
            "deployment_id": _STRING,
            "retry_count": {"type": "integer", "minimum": 0},
            "last_failure": _NULLABLE_STRING,
            "next_retry_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "ListInvocationsResponse": {
        "type": "object",
        "required": ["invocations"],
        "properties": {
            "invocations": {"type": "array", "items": {"$ref": "#/components/schemas/Invocation"}},
            "next_page_token": _STRING,
        },
    },
}


@cache
def admin_openapi() -> bytes:
    """The admin API's OpenAPI document: Restate 1.7.12's (`admin_api/admin-openapi.json`, as Restate
    serves it) without the operations kinvoke does not serve, nor the tags and components only
    they used, and with kinvoke's own operations; compact JSON, keys in Restate's order."""
    doc = json.loads(files("admin_api").joinpath("admin-openapi.json").read_bytes())
    for method, path in UNSERVED:
        operations = doc["paths"][path]
        del operations[method]
        if not operations:
            del doc["paths"][path]
    for path, operations in KINVOKE_PATHS.items():
        doc["paths"].setdefault(path, {}).update(operations)
    doc["components"]["schemas"].update(KINVOKE_SCHEMAS)
    used_tags = {tag for ops in doc["paths"].values() for op in ops.values() for tag in op.get("tags", ())}
    doc["tags"] = [tag for tag in doc["tags"] if tag["name"] in used_tags]
    _prune_components(doc)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _prune_components(doc: dict[str, Any]) -> None:
    """Drop the components no longer reachable through `$ref` from the rest of the document."""
    components: dict[str, dict[str, Any]] = doc["components"]
    reached: set[tuple[str, str]] = set()
    pending = _refs({k: v for k, v in doc.items() if k != "components"})
    while pending:
        kind, name = pending.pop()
        if (kind, name) in reached or name not in components.get(kind, {}):
            continue
        reached.add((kind, name))
        pending |= _refs(components[kind][name])
    for kind, named in components.items():
        components[kind] = {name: value for name, value in named.items() if (kind, name) in reached}


def _refs(value: Any) -> set[tuple[str, str]]:
    if isinstance(value, dict):
        out = {tuple(ref.split("/")[2:4]) for ref in [value.get("$ref")] if isinstance(ref, str)}
        for item in value.values():
            out |= _refs(item)
        return out  # type: ignore[return-value]
    if isinstance(value, list):
        return set().union(*(_refs(item) for item in value)) if value else set()
    return set()
