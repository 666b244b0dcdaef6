"""Planning a registration: how a discovered manifest becomes registry records, and Restate's
rules for registering a URI again. Pure: the admin API writes the records a plan returns."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from schemas.registry import (
    DEPLOYMENT_PREFIX,
    HANDLER_TYPES,
    SERVICE_PREFIX,
    SERVICE_TYPES,
    DeploymentRecord,
    HandlerRecord,
    Registry,
    ServiceRecord,
    ServiceRevision,
)

SERVICE_NAME = re.compile(r"^([a-zA-Z]|_[a-zA-Z0-9])[a-zA-Z0-9._-]*$")
HANDLER_NAME = re.compile(r"^([a-zA-Z]|_[a-zA-Z0-9])[a-zA-Z0-9_]*$")
MIN_DISCOVERABLE_VERSION = 5
MAX_DISCOVERABLE_VERSION = 7


class RegistryError(Exception):
    """A request about the registry that is refused, with its HTTP status and restate code."""

    def __init__(self, status: int, message: str, restate_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.restate_code = restate_code


class RegistrationError(RegistryError):
    """A registration Restate would refuse (bad manifest, conflict, unreachable deployment)."""


def normalize_uri(uri: str) -> str:
    """Restate stores deployment URIs with a trailing slash (`http://127.0.0.1:9080/`)."""
    return uri if uri.endswith("/") else uri + "/"


def _options(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "idempotency_retention_ms": obj.get("idempotencyRetention"),
        "journal_retention_ms": obj.get("journalRetention"),
        "workflow_completion_retention_ms": obj.get("workflowCompletionRetention"),
        "inactivity_timeout_ms": obj.get("inactivityTimeout"),
        "abort_timeout_ms": obj.get("abortTimeout"),
        "enable_lazy_state": obj.get("enableLazyState"),
        "retry_max_attempts": obj.get("retryPolicyMaxAttempts"),
        "retry_initial_interval_ms": obj.get("retryPolicyInitialInterval"),
        "retry_max_interval_ms": obj.get("retryPolicyMaxInterval"),
        "retry_exponentiation_factor": obj.get("retryPolicyExponentiationFactor"),
        "retry_on_max_attempts": (obj.get("retryPolicyOnMaxAttempts") or "").capitalize() or None,
    }


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _handler_from_manifest(h: dict[str, Any], service_ty: str) -> HandlerRecord:
    name = h.get("name", "")
    if not isinstance(name, str) or not HANDLER_NAME.match(name):
        raise RegistrationError(400, f"[META0010] invalid handler name '{name}'", "META0010")
    ty = h.get("ty")
    if service_ty == "SERVICE":
        if ty is not None:
            raise RegistrationError(400, f"handler '{name}' of a service cannot have a type", "META0010")
        handler_ty = None
    else:
        default = "WORKFLOW" if service_ty == "WORKFLOW" else "EXCLUSIVE"
        ty = ty or default
        if ty not in HANDLER_TYPES or (ty == "WORKFLOW" and service_ty != "WORKFLOW"):
            raise RegistrationError(400, f"handler '{name}' has an invalid type '{ty}'", "META0010")
        handler_ty = HANDLER_TYPES[ty]
    inp = h.get("input", {"contentType": "*/*", "required": False})
    out = h.get("output", {"contentType": "application/json", "setContentTypeIfEmpty": False})
    return HandlerRecord(
        name=name,
        ty=handler_ty,
        public=not h.get("ingressPrivate", False),
        input_required=bool(inp.get("required", False)),
        input_content_type=inp.get("contentType"),
        input_json_schema=_json_text(inp.get("jsonSchema")),
        output_content_type=out.get("contentType"),
        output_set_content_type_if_empty=bool(out.get("setContentTypeIfEmpty", False)),
        output_json_schema=_json_text(out.get("jsonSchema")),
        documentation=h.get("documentation"),
        metadata=h.get("metadata") or {},
        **_options(h),
    )


def services_from_manifest(
    manifest: dict[str, Any], deployment_id: str, registry: Registry
) -> list[ServiceRecord]:
    if not isinstance(manifest.get("services"), list):
        raise RegistrationError(400, "[META0003] bad endpoint manifest: missing 'services'", "META0003")
    out: list[ServiceRecord] = []
    for s in manifest["services"]:
        name = s.get("name", "")
        if not isinstance(name, str) or not SERVICE_NAME.match(name):
            raise RegistrationError(400, f"[META0009] invalid service name '{name}'", "META0009")
        ty = s.get("ty")
        if ty not in SERVICE_TYPES:
            raise RegistrationError(400, f"service '{name}' has an invalid type '{ty}'", "META0009")
        handlers = [_handler_from_manifest(h, ty) for h in s.get("handlers", [])]
        existing = registry.service(name)
        out.append(
            ServiceRecord(
                name=name,
                ty=SERVICE_TYPES[ty],
                revision=(existing.revision + 1) if existing else 1,
                deployment_id=deployment_id,
                public=not s.get("ingressPrivate", False),
                handlers=handlers,
                documentation=s.get("documentation"),
                metadata=s.get("metadata") or {},
                **_options(s),
            )
        )
    return out


@dataclass(frozen=True)
class Discovered:
    manifest: dict[str, Any]
    http_version: str
    protocol_mode: str
    min_protocol_version: int
    max_protocol_version: int
    sdk_version: str | None


@dataclass(frozen=True)
class RegistrationPlan:
    deployment: DeploymentRecord
    services: list[ServiceRecord]
    created: bool  # a new deployment (201) or an existing one (200)
    changed: bool  # whether anything needs to be written

    def records(self) -> list[tuple[str, bytes | None]]:
        if not self.changed:
            return []
        out: list[tuple[str, bytes | None]] = [
            (f"{SERVICE_PREFIX}{s.name}", s.encode()) for s in self.services
        ]
        out.append((f"{DEPLOYMENT_PREFIX}{self.deployment.id}", self.deployment.encode()))
        return out


def _comparable(svc: ServiceRecord) -> dict[str, Any]:
    return svc.model_dump(exclude={"revision", "deployment_id"})


def plan_registration(
    registry: Registry,
    discovered: Discovered,
    *,
    uri: str,
    force: bool,
    additional_headers: dict[str, str],
    metadata: dict[str, str],
    now_ms: int,
    new_deployment_id: str,
) -> RegistrationPlan:
    """Restate's rules: same URI and same services → the existing deployment, unchanged (200);
    same URI with different services → overwrite only with `force` (else 409); new URI → 201.
    A service may move to a new deployment, but never change its type unless forced."""
    if not (
        discovered.min_protocol_version <= MAX_DISCOVERABLE_VERSION
        and discovered.max_protocol_version >= MIN_DISCOVERABLE_VERSION
    ):
        raise RegistrationError(
            400,
            "[META0012] the deployment supports service protocol versions "
            f"[{discovered.min_protocol_version}, {discovered.max_protocol_version}], "
            f"this server supports [{MIN_DISCOVERABLE_VERSION}, "
            f"{MAX_DISCOVERABLE_VERSION}]",
            "META0012",
        )
    if discovered.protocol_mode not in ("BIDI_STREAM", "REQUEST_RESPONSE"):
        raise RegistrationError(400, "[META0003] bad endpoint manifest: missing protocol mode", "META0003")
    uri = normalize_uri(uri)
    existing = registry.deployment_for_uri(uri)
    deployment_id = existing.id if existing else new_deployment_id
    services = services_from_manifest(discovered.manifest, deployment_id, registry)
    if existing is not None:
        current = [registry.service(s.name) for s in services]
        unchanged = all(
            c is not None and c.deployment_id == existing.id and _comparable(c) == _comparable(s)
            for c, s in zip(current, services, strict=True)
        ) and {s.name for s in services} == {s.name for s in existing.services}
        if unchanged:
            return RegistrationPlan(
                existing, [c for c in current if c is not None], created=False, changed=False
            )
        if not force:
            raise RegistrationError(
                409,
                f"[META0004] the deployment at '{uri}' is already registered with different services; "
                "use force to overwrite it",
                "META0004",
            )
    for s in services:
        prior = registry.service(s.name)
        if prior is not None and prior.ty != s.ty and not force:
            raise RegistrationError(
                409,
                f"[META0006] cannot change the type of service '{s.name}' from {prior.ty} to {s.ty}",
                "META0006",
            )
    protocol_type = "BidiStream" if discovered.protocol_mode == "BIDI_STREAM" else "RequestResponse"
    deployment = DeploymentRecord(
        id=deployment_id,
        uri=uri,
        protocol_type=protocol_type,
        http_version=discovered.http_version,
        additional_headers=additional_headers,
        metadata=metadata,
        created_at_ms=existing.created_at_ms if existing else now_ms,
        min_protocol_version=discovered.min_protocol_version,
        max_protocol_version=discovered.max_protocol_version,
        sdk_version=discovered.sdk_version,
        services=[ServiceRevision(name=s.name, revision=s.revision) for s in services],
        manifest_json=json.dumps(discovered.manifest, separators=(",", ":")),
    )
    return RegistrationPlan(deployment, services, created=existing is None, changed=True)
