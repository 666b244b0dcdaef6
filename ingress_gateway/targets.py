"""Resolving an ingress path against the registry, and checking the request fits the handler
(Restate's `InputRules`: the handler's manifest `input` decides which bodies it takes)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ingress_gateway.paths import IngressError, InvocationPath, ServiceTypeOf, service_not_found
from schemas.records import HandlerType, ServiceType
from schemas.registry import HandlerRecord, Registry


class UnknownTarget(IngressError):
    """404: the registry as this process has read it does not know the service or handler. It
    may have been registered through another process a moment ago, so the ingress looks again
    once its registry view has caught up before it answers this."""


def service_type_of(registry: Registry, service: str) -> ServiceType | None:
    svc = registry.service(service)
    return None if svc is None else svc.service_type


def known_service_type(registry: Registry) -> ServiceTypeOf:
    """`service_type_of` for the path parser, raising `UnknownTarget` (Restate's 404) for a
    service the registry does not know."""

    def service_type(service: str) -> ServiceType:
        ty = service_type_of(registry, service)
        if ty is None:
            raise UnknownTarget(404, service_not_found(service).message)
        return ty

    return service_type


class RuleKind(Enum):
    NO_BODY = "none"  # no body and no content-type
    CONTENT_TYPE = "content-type"  # a content-type matching the rule's, any body
    JSON = "json"  # a content-type matching the rule's and a non-empty body


@dataclass(frozen=True)
class InputRule:
    kind: RuleKind
    content_type: str = "*/*"  # `*/*`, `type/*` or `type/subtype`, as in the manifest

    def check(self, content_type: str | None, body: bytes) -> str | None:
        """None if the request passes this rule, else Restate's reason why not."""
        if self.kind == RuleKind.NO_BODY:
            if body or content_type is not None:
                return (
                    "Expected body and content-type to be empty, but wasn't with content-type "
                    f"'{_rust_debug_option(content_type)}'"
                )
            return None
        if content_type is None:
            return "Empty content-type"
        if not _content_type_matches(self.content_type, content_type):
            return f"Content-type '{content_type}' does not match '{_display(self.content_type)}'"
        if self.kind == RuleKind.JSON and not body:
            return "Empty body not allowed"  # in JSON an empty value is not a value
        return None


def input_rules(handler: HandlerRecord) -> tuple[InputRule, ...]:
    """Restate's rules from the manifest's `input` (a missing `input` was stored as `*/*`, not
    required, which gives Restate's default rules): an optional input also accepts nothing at
    all; a JSON schema makes an empty body invalid."""
    rules: list[InputRule] = []
    if not handler.input_required:
        rules.append(InputRule(RuleKind.NO_BODY))
    if handler.input_content_type is not None:
        kind = RuleKind.JSON if handler.input_json_schema is not None else RuleKind.CONTENT_TYPE
        rules.append(InputRule(kind, handler.input_content_type))
    return tuple(rules)


NO_INPUT = (InputRule(RuleKind.NO_BODY),)


def validate_input(rules: tuple[InputRule, ...], content_type: str | None, body: bytes) -> None:
    """The request passes if one rule passes; else the last rule's reason is the answer.

    One leniency: a handler that takes no input at all accepts an empty body whatever its
    content-type (Restate refuses the content-type). aiohttp's client sends
    `application/octet-stream` on every POST without a body, and such a request gives the
    handler nothing it could misread."""
    if rules == NO_INPUT and not body:
        return
    reason = "Bad configuration of the input validation rules"
    for rule in rules:
        failed = rule.check(content_type, body)
        if failed is None:
            return
        reason = failed
    raise IngressError(400, f"input validation error: {reason}")


def _split_rule(content_type: str) -> tuple[str, str]:
    ty, _, sub = content_type.strip().partition("/")
    return ty, sub


def _display(rule_content_type: str) -> str:
    ty, sub = _split_rule(rule_content_type)
    return "*/*" if (ty, sub) == ("*", "*") else f"{ty}/{sub}"


def _content_type_matches(rule_content_type: str, given: str) -> bool:
    """Case-sensitive, parameters of the request's content-type ignored (as Restate)."""
    ty, sub = _split_rule(rule_content_type)
    if (ty, sub) == ("*", "*"):
        return True
    mime = given.split(";", 1)[0].strip()
    if "/" not in mime:
        return False
    given_ty, given_sub = mime.split("/", 1)
    return given_ty == ty and (sub == "*" or given_sub == sub)


def _rust_debug_option(value: str | None) -> str:
    if value is None:
        return "None"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'Some("{escaped}")'


@dataclass(frozen=True)
class ResolvedTarget:
    service: str
    handler: str
    key: str | None
    service_ty: ServiceType
    handler_ty: HandlerType | None
    input: tuple[InputRule, ...]
    output_content_type: str | None
    set_content_type_if_empty: bool

    def validate_input(self, content_type: str | None, body: bytes) -> None:
        validate_input(self.input, content_type, body)


def resolve_target(registry: Registry, path: InvocationPath) -> ResolvedTarget:
    svc = registry.service(path.service)
    if svc is None:
        raise UnknownTarget(404, service_not_found(path.service).message)
    handler = registry.handler(path.service, path.handler)
    if handler is None:
        raise UnknownTarget(
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
        input=input_rules(handler),
        output_content_type=handler.output_content_type,
        set_content_type_if_empty=handler.output_set_content_type_if_empty,
    )
