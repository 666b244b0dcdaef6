"""The options an invocation runs with: the handler's over the service's over the server's
defaults (Restate's precedence), resolved where an invocation is created (the ingress, a
subscription, the invoker for calls) and carried in its records."""

from __future__ import annotations

from typing import TypeVar

from schemas.records import HandlerType, InvocationOptions
from schemas.registry import HandlerRecord, Registry, ServiceRecord
from schemas.settings import Settings

T = TypeVar("T", int, float, str)


def invocation_options(
    registry: Registry, service: str, handler: str, settings: Settings, *, idempotent: bool = False
) -> InvocationOptions:
    svc: ServiceRecord | None = registry.service(service)
    h: HandlerRecord | None = registry.handler(service, handler)
    layers = [x for x in (h, svc) if x is not None]

    def pick(name: str, default: T | None) -> T | None:
        for layer in layers:
            value = getattr(layer, name)
            if value is not None:
                return value
        return default

    s = settings
    if h is not None and h.handler_type == HandlerType.WORKFLOW:
        completion = pick("workflow_completion_retention_ms", s.default_workflow_completion_retention_ms)
    elif idempotent:
        completion = pick("idempotency_retention_ms", s.default_idempotency_retention_ms)
    else:
        completion = None
    return InvocationOptions(
        retry_initial_interval_ms=pick("retry_initial_interval_ms", s.default_retry_initial_interval_ms),
        retry_exponentiation_factor=pick(
            "retry_exponentiation_factor", s.default_retry_exponentiation_factor
        ),
        retry_max_interval_ms=pick("retry_max_interval_ms", s.default_retry_max_interval_ms),
        retry_max_attempts=pick("retry_max_attempts", s.default_retry_max_attempts),
        retry_on_max_attempts=pick("retry_on_max_attempts", s.default_retry_on_max_attempts),
        inactivity_timeout_ms=pick("inactivity_timeout_ms", s.default_inactivity_timeout_ms),
        abort_timeout_ms=pick("abort_timeout_ms", s.default_abort_timeout_ms),
        journal_retention_ms=pick("journal_retention_ms", s.default_journal_retention_ms),
        completion_retention_ms=completion,
    )
