"""JSON shapes of the admin API, field for field as Restate 1.7.12 renders them."""

from __future__ import annotations

import json
from typing import Any

from schemas.durations import friendly_duration
from schemas.durations import rfc3339_nanos as rfc3339
from schemas.registry import DeploymentRecord, HandlerRecord, Registry, ServiceRecord

DEFAULT_IDEMPOTENCY_RETENTION_MS = 24 * 3600 * 1000
DEFAULT_JOURNAL_RETENTION_MS = 24 * 3600 * 1000
DEFAULT_WORKFLOW_COMPLETION_RETENTION_MS = 24 * 3600 * 1000
DEFAULT_INACTIVITY_TIMEOUT_MS = 60 * 1000
DEFAULT_ABORT_TIMEOUT_MS = 10 * 60 * 1000


def _schema(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def describe(content_type: str | None, schema_text: str | None) -> str:
    if content_type is None:
        return "none"
    if content_type.split(";")[0].strip() == "application/json":
        schema = _schema(schema_text)
        if isinstance(schema, dict) and isinstance(schema.get("type"), str):
            return f"JSON {schema['type']}"
        return "JSON value"
    return f"value of content-type '{content_type}'"


def _optional_durations(rec: HandlerRecord | ServiceRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, name in [
        ("idempotency_retention_ms", "idempotency_retention"),
        ("workflow_completion_retention_ms", "workflow_completion_retention"),
        ("journal_retention_ms", "journal_retention"),
        ("inactivity_timeout_ms", "inactivity_timeout"),
        ("abort_timeout_ms", "abort_timeout"),
    ]:
        value = getattr(rec, field)
        if value is not None:
            out[name] = friendly_duration(value)
    if rec.enable_lazy_state is not None:
        out["enable_lazy_state"] = rec.enable_lazy_state
    return out


def handler_json(h: HandlerRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"name": h.name}
    if h.ty is not None:
        out["ty"] = h.ty
    if h.documentation is not None:
        out["documentation"] = h.documentation
    if h.metadata:
        out["metadata"] = h.metadata
    out.update(_optional_durations(h))
    out["public"] = h.public
    out["input_description"] = describe(h.input_content_type, h.input_json_schema)
    out["output_description"] = describe(h.output_content_type, h.output_json_schema)
    if h.input_json_schema is not None:
        out["input_json_schema"] = _schema(h.input_json_schema)
    if h.output_json_schema is not None:
        out["output_json_schema"] = _schema(h.output_json_schema)
    retry: dict[str, Any] = {}
    if h.retry_initial_interval_ms is not None:
        retry["initial_interval"] = friendly_duration(h.retry_initial_interval_ms)
    if h.retry_exponentiation_factor is not None:
        retry["exponentiation_factor"] = h.retry_exponentiation_factor
    retry["max_attempts"] = h.retry_max_attempts
    if h.retry_max_interval_ms is not None:
        retry["max_interval"] = friendly_duration(h.retry_max_interval_ms)
    if h.retry_on_max_attempts is not None:
        retry["on_max_attempts"] = h.retry_on_max_attempts
    out["retry_policy"] = retry
    return out


def service_json(s: ServiceRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name, "ty": s.ty, "handlers": [handler_json(h) for h in s.handlers]}
    if s.documentation is not None:
        out["documentation"] = s.documentation
    if s.metadata:
        out["metadata"] = s.metadata
    out["deployment_id"] = s.deployment_id
    out["revision"] = s.revision
    out["public"] = s.public
    out["idempotency_retention"] = friendly_duration(
        s.idempotency_retention_ms
        if s.idempotency_retention_ms is not None
        else DEFAULT_IDEMPOTENCY_RETENTION_MS
    )
    if s.ty == "Workflow":
        out["workflow_completion_retention"] = friendly_duration(
            s.workflow_completion_retention_ms
            if s.workflow_completion_retention_ms is not None
            else DEFAULT_WORKFLOW_COMPLETION_RETENTION_MS
        )
    out["journal_retention"] = friendly_duration(
        s.journal_retention_ms if s.journal_retention_ms is not None else DEFAULT_JOURNAL_RETENTION_MS
    )
    out["inactivity_timeout"] = friendly_duration(
        s.inactivity_timeout_ms if s.inactivity_timeout_ms is not None else DEFAULT_INACTIVITY_TIMEOUT_MS
    )
    out["abort_timeout"] = friendly_duration(
        s.abort_timeout_ms if s.abort_timeout_ms is not None else DEFAULT_ABORT_TIMEOUT_MS
    )
    out["enable_lazy_state"] = bool(s.enable_lazy_state)
    out["retry_policy"] = {
        "initial_interval": friendly_duration(s.retry_initial_interval_ms or 500),
        "exponentiation_factor": s.retry_exponentiation_factor or 2.0,
        "max_attempts": s.retry_max_attempts if s.retry_max_attempts is not None else 70,
        "max_interval": friendly_duration(s.retry_max_interval_ms or 60_000),
        "on_max_attempts": s.retry_on_max_attempts or "Pause",
    }
    return out


def deployment_json(dep: DeploymentRecord, registry: Registry, *, full_services: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": dep.id,
        "uri": dep.uri,
        "protocol_type": dep.protocol_type,
        "http_version": dep.http_version,
    }
    if dep.additional_headers:
        out["additional_headers"] = dep.additional_headers
    if dep.metadata:
        out["metadata"] = dep.metadata
    out["created_at"] = rfc3339(dep.created_at_ms)
    out["min_protocol_version"] = dep.min_protocol_version
    out["max_protocol_version"] = dep.max_protocol_version
    if dep.sdk_version is not None:
        out["sdk_version"] = dep.sdk_version
    if full_services:
        services = []
        for rev in dep.services:
            svc = registry.service(rev.name)
            if svc is not None and svc.deployment_id == dep.id:
                services.append(service_json(svc))
        out["services"] = services
    else:
        out["services"] = [{"name": r.name, "revision": r.revision} for r in dep.services]
    return out


def register_response_json(dep: DeploymentRecord, services: list[ServiceRecord]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": dep.id,
        "services": [service_json(s) for s in services],
        "min_protocol_version": dep.min_protocol_version,
        "max_protocol_version": dep.max_protocol_version,
    }
    if dep.sdk_version is not None:
        out["sdk_version"] = dep.sdk_version
    return out
