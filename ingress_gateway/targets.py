"""Resolving an ingress path against the registry, and checking the request fits the handler."""

from __future__ import annotations

from dataclasses import dataclass

from ingress_gateway.paths import IngressError, InvocationPath, service_not_found
from schemas.records import HandlerType, ServiceType
from schemas.registry import Registry


def service_type_of(registry: Registry, service: str) -> ServiceType | None:
    svc = registry.service(service)
    return None if svc is None else svc.service_type


@dataclass(frozen=True)
class ResolvedTarget:
    service: str
    handler: str
    key: str | None
    service_ty: ServiceType
    handler_ty: HandlerType | None
    input_content_type: str | None  # None: the handler takes no input
    input_required: bool
    output_content_type: str | None
    set_content_type_if_empty: bool

    def validate_input(self, content_type: str | None, body: bytes) -> None:
        """Restate's input validation: a body needs a content type matching the handler's."""
        if not body:
            if self.input_required:
                raise IngressError(400, "input validation error: Empty body")
            return
        if self.input_content_type is None:
            raise IngressError(400, "input validation error: Expected no body")
        if not content_type:
            raise IngressError(400, "input validation error: Empty content-type")
        if not _content_type_matches(self.input_content_type, content_type):
            mime = content_type.split(";")[0].strip()
            raise IngressError(
                400,
                f"input validation error: Content-type '{mime}' does not match '{self.input_content_type}'",
            )


def _content_type_matches(accepted: str, given: str) -> bool:
    mime = given.split(";")[0].strip().lower()
    for option in accepted.split(","):
        want = option.split(";")[0].strip().lower()
        if want in ("*/*", mime):
            return True
        if want.endswith("/*") and mime.startswith(want[:-1]):
            return True
    return False


def resolve_target(registry: Registry, path: InvocationPath) -> ResolvedTarget:
    svc = registry.service(path.service)
    if svc is None:
        raise service_not_found(path.service)
    handler = registry.handler(path.service, path.handler)
    if handler is None:
        raise IngressError(
            404,
            f"the service '{path.service}' exists, but the handler '{path.handler}' was not found, "
            "check that the handler exists in the latest registered service version.",
        )
    if not svc.public or not handler.public:
        raise IngressError(400, "the invoked service is not public")
    return ResolvedTarget(
        service=path.service,
        handler=path.handler,
        key=path.key,
        service_ty=svc.service_type,
        handler_ty=handler.handler_type,
        input_content_type=handler.input_content_type,
        input_required=handler.input_required,
        output_content_type=handler.output_content_type,
        set_content_type_if_empty=handler.output_set_content_type_if_empty,
    )
