"""What the processor's and the ingress' OpenTelemetry tracing share (off unless
KINVOKE_TRACING_ENDPOINT is set): the tracer provider exporting over OTLP/HTTP from the SDK's own
batching thread, and W3C `traceparent` parsing and formatting."""

from __future__ import annotations

from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from schemas.settings import Settings

log = structlog.get_logger(__name__)

PROPAGATOR = TraceContextTextMapPropagator()


def tracer_provider(
    settings: Settings,
    component: str,
    exporter: SpanExporter | None = None,
    id_generator: IdGenerator | None = None,
) -> TracerProvider | None:
    """The component's tracer provider, or None while tracing is off (no endpoint, no exporter)."""
    if not settings.tracing_endpoint and exporter is None:
        return None
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.tracing_endpoint)
    resource = Resource.create({"service.name": settings.tracing_service_name})
    provider = TracerProvider(resource=resource, id_generator=id_generator, shutdown_on_exit=False)
    # The SDK's own export thread: spans are batched off the request and processing paths.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info(
        "tracing.enabled",
        component=component,
        endpoint=settings.tracing_endpoint,
        service=settings.tracing_service_name,
    )
    return provider


class ComponentTracing:
    """A component's tracer (a no-op one while tracing is off) and its shutdown."""

    def __init__(
        self,
        settings: Settings,
        component: str,
        exporter: SpanExporter | None = None,
        id_generator: IdGenerator | None = None,
    ) -> None:
        self._provider = tracer_provider(settings, component, exporter, id_generator)
        self.enabled = self._provider is not None
        self._tracer: trace.Tracer = (
            trace.NoOpTracer()
            if self._provider is None
            else self._provider.get_tracer(f"kinvoke.{component}")
        )

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()  # exports what is batched


def parse_traceparent(traceparent: str | None) -> SpanContext | None:
    if not traceparent:
        return None
    ctx = trace.get_current_span(PROPAGATOR.extract({"traceparent": traceparent})).get_span_context()
    return ctx if ctx.is_valid else None


def traceparent_of(span: Any) -> str | None:
    """The `traceparent` that makes `span` the parent of what carries it."""
    headers: dict[str, str] = {}
    PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
    return headers.get("traceparent")
