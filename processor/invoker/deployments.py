"""Which deployment an attempt goes to, from the registry."""

from __future__ import annotations

from processor.invoker.attempt import SERVER_MAX_PROTOCOL_VERSION, DeploymentTarget
from schemas.registry import Registry


def deployment_for(
    registry: Registry, service: str, pinned: str | None
) -> tuple[str, DeploymentTarget] | None:
    """The pinned deployment (an invocation stays on the one it started on), else the service's latest."""
    svc = registry.service(service)
    deployment_id = pinned or (svc.deployment_id if svc is not None else None)
    if deployment_id is None:
        return None
    dep = registry.deployment(deployment_id)
    if dep is None:
        return None
    return deployment_id, DeploymentTarget(
        uri=dep.uri,
        use_http_11=dep.http_version == "HTTP/1.1",
        bidi=dep.protocol_type == "BidiStream",
        additional_headers=dict(dep.additional_headers or {}),
        min_protocol_version=dep.min_protocol_version,
        max_protocol_version=min(dep.max_protocol_version, SERVER_MAX_PROTOCOL_VERSION),
    )
