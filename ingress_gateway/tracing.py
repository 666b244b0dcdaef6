"""The ingress' span (off unless KINVOKE_TRACING_ENDPOINT is set): as Restate's ingress, a server
span for each request that creates an invocation, a child of the request's W3C `traceparent` when
it has one. Its own `traceparent` travels in the Invoke (`span_context`), so the invocation's span
(emitted by the processor) is its child; the request's headers reach the handler unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from kafka_core.tracing import PROPAGATOR, ComponentTracing, traceparent_of
from schemas.settings import Settings

_CONTEXT_HEADERS = ("traceparent", "tracestate")


class IngressTracing(ComponentTracing):
    """The ingress' tracer; every method is a no-op while tracing is off."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        super().__init__(settings, "ingress", exporter)

    def start_request(
        self,
        headers: Mapping[str, str],
        method: str,
        target: str,
        invocation_id: str,
        start_ns: int,
    ) -> tuple[Any, str | None]:
        """The request's span (end it with `end_request`) and the `traceparent` that makes the
        invocation's span its child (None while tracing is off)."""
        if not self.enabled:
            return None, None
        carrier = {k.lower(): v for k, v in headers.items() if k.lower() in _CONTEXT_HEADERS}
        span = self._tracer.start_span(
            f"ingress {target}",
            context=PROPAGATOR.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "restate.invocation.id": invocation_id,
                "restate.invocation.target": target,
                "http.request.method": method,
            },
            start_time=start_ns,
        )
        return span, traceparent_of(span)

    @staticmethod
    def end_request(span: Any, status: int | None) -> None:
        """`status`: the answer's HTTP status; None when the request ended without one (the client
        went away)."""
        if span is None:
            return
        if status is None:
            span.set_status(Status(StatusCode.ERROR, "the request ended without an answer"))
        else:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()
