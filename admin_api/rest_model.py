"""JSON shapes of the admin API, field for field as Restate 1.7.12 renders them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from admin_api.json_body import Rejection, mismatch
from admin_api.registration import UriKind, uri_kind
from schemas.durations import friendly_duration
from schemas.durations import rfc3339_nanos as rfc3339
from schemas.registry import DeploymentRecord, HandlerRecord, ServiceRecord

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


def deployment_json(dep: DeploymentRecord, services: list[ServiceRecord] | None = None) -> dict[str, Any]:
    """`GET /deployments` lists `{name, revision}` pairs (`services` None); `GET /deployments/{id}`
    and `PATCH` show the deployment's own services in full."""
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
    if services is not None:
        out["services"] = [service_json(s) for s in services]
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


# -- request bodies, read as Restate's serde models read them ---------------------------------------

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class BodyMismatch(ValueError):
    """The JSON body does not fit the request type (axum's `JsonDataError`: 422)."""


def body_mismatch(type_name: str) -> Rejection:
    """serde's error for an untagged enum: it has no position to tell."""
    return mismatch(f"data did not match any variant of untagged enum {type_name}", None)


def _bool(body: dict[str, Any], name: str, *, optional: bool = False) -> bool | None:
    """`bool` with a default (missing: false, null refused) or `Option<bool>` (`optional`)."""
    value = body.get(name)
    if name not in body or (value is None and optional):
        return None if optional else False
    if not isinstance(value, bool):
        raise BodyMismatch(name)
    return value


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    """`String` (`required`) or `Option<String>`."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BodyMismatch(name)
    return value


def _string_map(body: dict[str, Any], name: str, *, headers: bool = False, nullable: bool = True) -> Any:
    """`Option<HashMap<String, String>>`, or a map with a default (`nullable=False`: null refused);
    `headers`: names and values must be valid HTTP header names and values."""
    value = body.get(name)
    if name not in body or (value is None and nullable):
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BodyMismatch(name)
    if headers and not all(
        _HEADER_NAME.match(k) and all(c == "\t" or (c >= " " and c != "\x7f") for c in v)
        for k, v in value.items()
    ):
        raise BodyMismatch(name)
    return value


def _uri(body: dict[str, Any], name: str = "uri", *, optional: bool = False) -> str | None:
    """`http::Uri` from a string: what is not a URI at all does not deserialize."""
    value = _string(body, name, required=not optional)
    if value is not None and uri_kind(value) == UriKind.INVALID:
        raise BodyMismatch(name)
    return value


@dataclass(frozen=True)
class RegisterRequest:
    """`RegisterDeploymentRequest::Http` (the Lambda variant is recognised, not served)."""

    uri: str
    additional_headers: dict[str, str] | None
    metadata: dict[str, str]
    use_http_11: bool
    breaking: bool
    force: bool | None
    dry_run: bool
    lambda_arn: str | None = None


def parse_register_request(body: Any) -> RegisterRequest:
    if isinstance(body, dict):
        common = {}
        try:
            common = {
                "additional_headers": _string_map(body, "additional_headers", headers=True),
                "metadata": _string_map(body, "metadata", nullable=False) or {},
                "breaking": bool(_bool(body, "breaking")),
                "force": _bool(body, "force", optional=True),
                "dry_run": bool(_bool(body, "dry_run")),
            }
            uri = _uri(body)
            assert uri is not None
            if body.get("auth") is not None and not isinstance(body["auth"], dict):
                raise BodyMismatch("auth")
            return RegisterRequest(uri=uri, use_http_11=bool(_bool(body, "use_http_11")), **common)
        except BodyMismatch:
            pass
        try:
            arn = _string(body, "arn", required=True)
            _string(body, "assume_role_arn")
            if common:
                return RegisterRequest(uri="", use_http_11=False, lambda_arn=arn, **common)
        except BodyMismatch:
            pass
    raise body_mismatch("RegisterDeploymentRequest")


@dataclass(frozen=True)
class UpdateRequest:
    """`UpdateDeploymentRequest`: `lambda_variant` when the body only fits the Lambda variant
    (which Restate also takes for `{}`, since the HTTP variant requires the `uri` key)."""

    uri: str | None
    additional_headers: dict[str, str] | None
    use_http_11: bool | None
    overwrite: bool
    dry_run: bool
    lambda_variant: bool = False
    lambda_address: bool = False  # `arn` or `assume_role_arn` given


def parse_update_request(body: Any) -> UpdateRequest:
    if isinstance(body, dict):
        try:
            if "uri" not in body:
                raise BodyMismatch("uri")
            return UpdateRequest(
                uri=_uri(body, optional=True),
                additional_headers=_string_map(body, "additional_headers", headers=True),
                use_http_11=_bool(body, "use_http_11", optional=True),
                overwrite=bool(_bool(body, "overwrite")),
                dry_run=bool(_bool(body, "dry_run")),
            )
        except BodyMismatch:
            pass
        try:
            address = _string(body, "arn") is not None
            address = _string(body, "assume_role_arn") is not None or address
            return UpdateRequest(
                uri=None,
                additional_headers=_string_map(body, "additional_headers", headers=True),
                use_http_11=None,
                overwrite=bool(_bool(body, "overwrite")),
                dry_run=bool(_bool(body, "dry_run")),
                lambda_variant=True,
                lambda_address=address,
            )
        except BodyMismatch:
            pass
    raise body_mismatch("UpdateDeploymentRequest")
