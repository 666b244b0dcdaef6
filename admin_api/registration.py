"""Planning registry changes: how a discovered manifest becomes registry records, and Restate
1.7's rules for registering, updating and removing deployments. Pure: the admin API writes the
records a plan returns.

Restate keeps every deployment's own service revisions and makes the highest revision of each
service the active one. kinvoke stores the active `ServiceRecord` per service (with the options
`PATCH /services` changed) and, per deployment, its services' revisions and the manifest they
came from, so a deployment's own (possibly older) revisions are rebuilt from its manifest when
they are shown or become active again (`deployment_services`, `_reindex`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

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

Records = list[tuple[str, bytes | None]]


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


# -- URIs as Restate reads them (the `http` crate's `Uri`) -----------------------------------------

_SCHEME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_AUTHORITY_CHARS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@[]"
)
_PATH_CHARS = frozenset([0x21, *range(0x24, 0x3C), 0x3D, *range(0x40, 0x60), *range(0x61, 0x7B), 0x7C, 0x7E])
_PATH_EXTRA = frozenset(b'"{}')
_QUERY_CHARS = frozenset([0x21, *range(0x24, 0x3C), 0x3D, *range(0x3F, 0x7F)])
_URI_MAX_LEN = 65534


class UriKind(Enum):
    ABSOLUTE = "absolute"  # scheme and authority: usable for a deployment
    RELATIVE = "relative"  # a valid URI without scheme or authority: 400 "not absolute"
    INVALID = "invalid"  # not a URI at all: the request body does not deserialize (422)


def uri_kind(uri: str) -> UriKind:
    """`http::Uri::from_str` then Restate's `validate_uri` (scheme and authority required)."""
    data = uri.encode("utf-8")
    if not data or len(data) > _URI_MAX_LEN:
        return UriKind.INVALID
    if data == b"*" or data[:1] == b"/":
        return UriKind.RELATIVE if _path_ok(data) else UriKind.INVALID
    scheme_end = _scheme_end(data)
    if scheme_end is None:  # authority-form (`host:port`) or nothing
        end = _authority_end(data)
        return UriKind.RELATIVE if end == len(data) else UriKind.INVALID
    rest = data[scheme_end + 3 :]
    end = _authority_end(rest)
    if not end:  # a scheme needs an authority; None: a bad character
        return UriKind.INVALID
    return UriKind.ABSOLUTE if _path_ok(rest[end:]) else UriKind.INVALID


def _scheme_end(data: bytes) -> int | None:
    if data.startswith((b"http://", b"https://")):
        return data.index(b":")
    for i, b in enumerate(data):
        if b == ord(":"):
            return i if data[i + 1 : i + 3] == b"//" and 0 < i <= 64 else None
        if b not in _SCHEME_CHARS:
            return None
    return None


def _authority_end(data: bytes) -> int | None:
    """Where the authority ends (at `/`, `?` or `#`); None if it is not a valid authority."""
    end, colons, at, brackets = len(data), 0, -1, ""
    for i, b in enumerate(data):
        if b in b"/?#":
            end = i
            break
        if b == ord(":"):
            colons += 1
        elif b == ord("["):
            if brackets:
                return None
            brackets = "["
        elif b == ord("]"):
            if brackets != "[":
                return None
            brackets, colons = "[]", 0
        elif b == ord("@"):
            at, colons = i, 0
        elif b not in _AUTHORITY_CHARS:
            return None  # includes `%`: no percent-encoding in an authority
    if brackets == "[" or colons > 1 or (end > 0 and at == end - 1):
        return None
    return end


def _path_ok(data: bytes) -> bool:
    path, _, query = data.partition(b"#")[0].partition(b"?")
    if not all(b in _PATH_CHARS or b in _PATH_EXTRA or b >= 0x7F for b in path):
        return False
    if not all(b in _QUERY_CHARS or b >= 0x7F for b in query):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _address(uri: str) -> tuple[str, str]:
    """What makes two deployment URIs the same deployment for Restate: authority and path (the
    scheme does not count; no routing headers are configured)."""
    parts = urlsplit(uri)
    return parts.netloc.lower(), (parts.path or "/").rstrip("/") or "/"


def find_deployment(registry: Registry, uri: str) -> DeploymentRecord | None:
    """The deployment registered at this address (the latest, if several are)."""
    address = _address(normalize_uri(uri))
    same = [d for d in registry.deployments.values() if _address(d.uri) == address]
    return max(same, key=lambda d: d.created_at_ms, default=None)


# -- manifests -------------------------------------------------------------------------------------


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


def _manifest_services(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    services = manifest.get("services")
    if not isinstance(services, list):
        raise RegistrationError(400, "[META0003] bad endpoint manifest: missing 'services'", "META0003")
    for s in services:
        name = s.get("name", "")
        if not isinstance(name, str) or not SERVICE_NAME.match(name):
            raise RegistrationError(400, f"[META0009] invalid service name '{name}'", "META0009")
        if s.get("ty") not in SERVICE_TYPES:
            raise RegistrationError(400, f"service '{name}' has an invalid type '{s.get('ty')}'", "META0009")
    return services


def _service_from_manifest(s: dict[str, Any], deployment_id: str, revision: int) -> ServiceRecord:
    ty = s["ty"]
    return ServiceRecord(
        name=s["name"],
        ty=SERVICE_TYPES[ty],
        revision=revision,
        deployment_id=deployment_id,
        public=not s.get("ingressPrivate", False),
        handlers=[_handler_from_manifest(h, ty) for h in s.get("handlers", [])],
        documentation=s.get("documentation"),
        metadata=s.get("metadata") or {},
        **_options(s),
    )


def services_from_manifest(
    manifest: dict[str, Any], deployment_id: str, registry: Registry
) -> list[ServiceRecord]:
    """The manifest's services as a new deployment's: each gets the next revision."""
    out = []
    for s in _manifest_services(manifest):
        active = registry.service(s["name"])
        out.append(_service_from_manifest(s, deployment_id, active.revision + 1 if active else 1))
    return out


def deployment_services(registry: Registry, dep: DeploymentRecord) -> list[ServiceRecord]:
    """A deployment's own services: the active record where this deployment serves the active
    revision, else the revision it registered, rebuilt from its manifest."""
    manifest = {s["name"]: s for s in json.loads(dep.manifest_json).get("services", [])}
    out = []
    for rev in dep.services:
        active = registry.service(rev.name)
        if active is not None and active.deployment_id == dep.id:
            out.append(active)
        elif rev.name in manifest:
            out.append(_service_from_manifest(manifest[rev.name], dep.id, rev.revision))
    return out


def _reindex(
    registry: Registry, changed: dict[str, DeploymentRecord | None], fresh: dict[str, ServiceRecord]
) -> Records:
    """The records that make `changed` deployments (None: removed) take effect: for each service
    they served or serve, the highest revision over all deployments becomes the active one (as
    Restate's active-revision index); `fresh` holds the changed deployment's newly built
    services. The deployment records come last."""
    after = {**registry.deployments, **changed}
    names: list[str] = []
    for dep_id, dep in changed.items():
        for d in (registry.deployment(dep_id), dep):
            for rev in d.services if d else []:
                if rev.name not in names:
                    names.append(rev.name)
    out: Records = []
    for name in names:
        current = registry.service(name)
        candidates = [
            (rev.revision, dep.id == (current.deployment_id if current else None), dep)
            for dep in after.values()
            if dep is not None
            for rev in dep.services
            if rev.name == name
        ]
        if not candidates:
            if current is not None:
                out.append((f"{SERVICE_PREFIX}{name}", None))
            continue
        revision, _, winner = max(candidates, key=lambda c: (c[0], c[1]))
        new = fresh.get(name) if winner.id in changed else None
        if new is None:
            if current is not None and (current.deployment_id, current.revision) == (winner.id, revision):
                continue  # unchanged: keeps what `PATCH /services` set
            rebuilt = deployment_services(Registry(), winner)
            new = next((s for s in rebuilt if s.name == name), None)
            if new is None:
                continue
        out.append((f"{SERVICE_PREFIX}{name}", new.encode()))
    for dep_id, dep in changed.items():
        out.append((f"{DEPLOYMENT_PREFIX}{dep_id}", dep.encode() if dep is not None else None))
    return out


# -- plans ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovered:
    manifest: dict[str, Any]
    http_version: str
    protocol_mode: str
    min_protocol_version: int
    max_protocol_version: int
    sdk_version: str | None


class Outcome(Enum):
    CREATED = "created"  # a new deployment (201)
    UNCHANGED = "unchanged"  # the URI is registered and nothing was asked to change (200)
    OVERWRITTEN = "overwritten"  # the URI is registered and was forced over (200)


@dataclass(frozen=True)
class RegistrationPlan:
    outcome: Outcome
    deployment: DeploymentRecord
    services: list[ServiceRecord]  # the deployment's services, as the answer shows them
    writes: Records

    @property
    def created(self) -> bool:
        return self.outcome == Outcome.CREATED

    def records(self) -> Records:
        return list(self.writes)


def unchanged(registry: Registry, dep: DeploymentRecord) -> RegistrationPlan:
    return RegistrationPlan(Outcome.UNCHANGED, dep, deployment_services(registry, dep), [])


def _check_discovered(discovered: Discovered) -> None:
    """What discovery already refused (`discovery._parse`), for manifests that come from elsewhere."""
    lo, hi = discovered.min_protocol_version, discovered.max_protocol_version
    if not (lo <= MAX_DISCOVERABLE_VERSION and hi >= MIN_DISCOVERABLE_VERSION):
        raise RegistrationError(
            500,
            f"[META0012] [META0012] unsupported service protocol versions: [{lo}, {hi}]. Supported versions "
            f"by this runtime are [{MIN_DISCOVERABLE_VERSION}, {MAX_DISCOVERABLE_VERSION}]. Please upgrade "
            "the SDK and try registering again.",
            "META0012",
        )
    if discovered.protocol_mode not in ("BIDI_STREAM", "REQUEST_RESPONSE"):
        raise RegistrationError(
            500,
            "[META0013] [META0013] received a bad response from the SDK: missing protocol mode",
            "META0013",
        )


def _deployment(
    dep_id: str,
    uri: str,
    discovered: Discovered,
    services: list[ServiceRecord],
    *,
    additional_headers: dict[str, str],
    metadata: dict[str, str],
    created_at_ms: int,
) -> DeploymentRecord:
    return DeploymentRecord(
        id=dep_id,
        uri=normalize_uri(uri),
        protocol_type="BidiStream" if discovered.protocol_mode == "BIDI_STREAM" else "RequestResponse",
        http_version=discovered.http_version,
        additional_headers=additional_headers,
        metadata=metadata,
        created_at_ms=created_at_ms,
        min_protocol_version=discovered.min_protocol_version,
        max_protocol_version=discovered.max_protocol_version,
        sdk_version=discovered.sdk_version,
        services=[ServiceRevision(name=s.name, revision=s.revision) for s in services],
        manifest_json=json.dumps(discovered.manifest, separators=(",", ":")),
    )


def plan_registration(
    registry: Registry,
    discovered: Discovered,
    *,
    uri: str,
    overwrite: bool,
    allow_breaking: bool,
    additional_headers: dict[str, str],
    metadata: dict[str, str],
    now_ms: int,
    new_deployment_id: str,
) -> RegistrationPlan:
    """Restate's `add_deployment`: a registered URI is left as it is unless `overwrite` (then
    its services are replaced: each gets the next revision, options from the manifest, and the
    services it no longer offers go unless another deployment serves them); a new URI is a new
    deployment. A service may not change its type unless `allow_breaking` (409 META0006)."""
    _check_discovered(discovered)
    existing = find_deployment(registry, uri)
    if existing is not None and not overwrite:
        return unchanged(registry, existing)
    dep_id = existing.id if existing else new_deployment_id
    services = services_from_manifest(discovered.manifest, dep_id, registry)
    for s in services:
        prior = registry.service(s.name)
        if prior is not None and prior.ty != s.ty and not allow_breaking:
            raise RegistrationError(
                409,
                f"[META0006] detected a new service revision for '{s.name}' changing the service type "
                "from previous revision. Service type cannot be changed across revisions.",
                "META0006",
            )
    deployment = _deployment(
        dep_id,
        uri,
        discovered,
        services,
        additional_headers=additional_headers,
        metadata=metadata,
        created_at_ms=now_ms,  # Restate stamps an overwritten deployment anew too
    )
    writes = _reindex(registry, {dep_id: deployment}, {s.name: s for s in services})
    outcome = Outcome.OVERWRITTEN if existing else Outcome.CREATED
    return RegistrationPlan(outcome, deployment, services, writes)


def plan_update(
    registry: Registry,
    existing: DeploymentRecord,
    discovered: Discovered,
    *,
    uri: str,
    additional_headers: dict[str, str],
    overwrite: bool,
) -> RegistrationPlan:
    """Restate's `update_deployment` (`PATCH /deployments/{id}`): the protocol versions must
    stay the same; without `overwrite` only the address, HTTP version, headers and SDK version
    change; with it the services are replaced too (revisions kept, type changes allowed)."""
    _check_discovered(discovered)
    old_range = (existing.min_protocol_version, existing.max_protocol_version)
    new_range = (discovered.min_protocol_version, discovered.max_protocol_version)
    if old_range != new_range:
        raise RegistrationError(
            400,
            "[META0016] an update deployment operation must provide an endpoint with the same services "
            "and handlers. The update tried to change the supported protocol versions from "
            f"{old_range[0]}..={old_range[1]} to {new_range[0]}..={new_range[1]}",
            "META0016",
        )
    protocol_type = "BidiStream" if discovered.protocol_mode == "BIDI_STREAM" else "RequestResponse"
    if not overwrite:
        deployment = existing.model_copy(
            update={
                "uri": normalize_uri(uri),
                "protocol_type": protocol_type,
                "http_version": discovered.http_version,
                "additional_headers": additional_headers,
                "sdk_version": discovered.sdk_version,
            }
        )
        writes: Records = [(f"{DEPLOYMENT_PREFIX}{existing.id}", deployment.encode())]
        return RegistrationPlan(
            Outcome.OVERWRITTEN, deployment, deployment_services(registry, existing), writes
        )
    previous = {s.name: s.revision for s in existing.services}
    services = [
        _service_from_manifest(s, existing.id, previous.get(s["name"], 1))
        for s in _manifest_services(discovered.manifest)
    ]
    deployment = _deployment(
        existing.id,
        uri,
        discovered,
        services,
        additional_headers=additional_headers,
        metadata=existing.metadata,
        created_at_ms=existing.created_at_ms,
    )
    writes = _reindex(registry, {existing.id: deployment}, {s.name: s for s in services})
    return RegistrationPlan(Outcome.OVERWRITTEN, deployment, services, writes)


def plan_removal(registry: Registry, dep: DeploymentRecord) -> Records:
    """`DELETE /deployments/{id}?force=true`: the deployment goes; each of its services falls
    back to the highest revision another deployment serves, or goes too."""
    return _reindex(registry, {dep.id: None}, {})
