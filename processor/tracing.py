"""OpenTelemetry tracing of invocations (off unless KINVOKE_TRACING_ENDPOINT is set): a span per
invocation and a span per attempt, exported over OTLP/HTTP, with W3C `traceparent` carried from
the ingress request to the deployment, as Restate does.

An invocation outlives any one processor (partitions move), so its span's ids are derived rather
than remembered: the trace is the caller's (the `traceparent` the ingress request carried, kept
in the invocation's input headers) or one derived from the invocation id, and the span id is
derived from the invocation id. Every attempt, on whichever processor runs it, is then a child of
the same invocation span, and the invocation span itself is emitted once, by the processor that
commits the completion, with the invocation's creation time as its start.
"""

from __future__ import annotations

import contextvars
import hashlib
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from kafka_core.tracing import ComponentTracing, parse_traceparent, traceparent_of
from schemas.service_protocol import Frame, decode_message
from schemas.settings import Settings

log = structlog.get_logger(__name__)

# Ids a span must have (the invocation span): read by the id generator while the span starts.
_FORCED: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("forced_ids", default=None)


class _Ids(RandomIdGenerator):
    def generate_span_id(self) -> int:
        forced = _FORCED.get()
        return forced[1] if forced is not None else super().generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _FORCED.get()
        return forced[0] if forced is not None else super().generate_trace_id()


class Tracing(ComponentTracing):
    """The processor's tracer; every method is a no-op while tracing is off."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        super().__init__(settings, "processor", exporter, _Ids())

    def start_attempt(
        self, invocation_id: str, traceparent: str | None, target: str, attempt: int
    ) -> tuple[Any, dict[str, str]]:
        """An attempt's span, a child of its invocation's, and the headers that carry it to the
        deployment (`traceparent`); end it with `end_attempt`."""
        if not self.enabled:
            return None, {}
        parent = trace.set_span_in_context(
            NonRecordingSpan(invocation_span_context(invocation_id, traceparent))
        )
        span = self._tracer.start_span(
            f"invoke {target}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={"restate.invocation.id": invocation_id, "restate.invocation.attempt": attempt},
        )
        traceparent = traceparent_of(span)
        return span, {"traceparent": traceparent} if traceparent is not None else {}

    @staticmethod
    def end_attempt(span: Any, outcome: str, failure: str | None = None) -> None:
        if span is None:
            return
        span.set_attribute("restate.attempt.outcome", outcome)
        if failure is not None:
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end()

    def invocation_completed(
        self,
        invocation_id: str,
        traceparent: str | None,
        target: str,
        created_at_ms: int,
        completed_at_ms: int | None,
        failure: str | None,
    ) -> None:
        """The invocation's span, from its creation to its completion (emitted once, after the
        completion is committed)."""
        if not self.enabled:
            return
        ctx = invocation_span_context(invocation_id, traceparent)
        caller = parse_traceparent(traceparent)
        parent = trace.set_span_in_context(NonRecordingSpan(caller)) if caller is not None else None
        token = _FORCED.set((ctx.trace_id, ctx.span_id))
        try:
            span = self._tracer.start_span(
                f"invocation {target}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"restate.invocation.id": invocation_id, "restate.invocation.target": target},
                start_time=created_at_ms * 1_000_000,
            )
        finally:
            _FORCED.reset(token)
        if failure is not None:
            span.set_status(Status(StatusCode.ERROR, failure))
        # None: now, once its completion is committed (the log's completion time is the attempt
        # outcome's stamp, taken just before the attempt span ends).
        span.end(
            end_time=None if completed_at_ms is None else max(completed_at_ms, created_at_ms) * 1_000_000
        )


def invocation_span_context(invocation_id: str, traceparent: str | None) -> SpanContext:
    """The invocation span's ids: the caller's trace (or one derived from the id) and a span id
    derived from the invocation id."""
    digest = hashlib.sha256(invocation_id.encode()).digest()
    caller = parse_traceparent(traceparent)
    trace_id = caller.trace_id if caller is not None else int.from_bytes(digest[8:24], "big") or 1
    span_id = int.from_bytes(digest[:8], "big") or 1
    # The caller's sampling decision holds for the whole invocation.
    flags = caller.trace_flags if caller is not None else TraceFlags(TraceFlags.SAMPLED)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


def input_traceparent(frame: bytes) -> str | None:
    """The `traceparent` among an InputCommand's headers (the ingress request's)."""
    message = decode_message(Frame.parse(frame))
    return next((h.value for h in getattr(message, "headers", []) if h.key.lower() == "traceparent"), None)
