"""Tracing on a real stack: a call through the ingress with a W3C `traceparent` yields, at an
OTLP/HTTP receiver, the ingress request's span as a child of the caller's span, the invocation's
span as its child and the attempt's span as the invocation's child; the deployment (the Restate
Python SDK) receives the attempt span's `traceparent` on the attempt's HTTP request, in the
caller's trace."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.cluster import Stack, running_stack

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


class OtlpReceiver:
    """Collects the spans of OTLP/HTTP (protobuf) exports."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def named(self, prefix: str) -> list[Any]:
        return [s for s in list(self.spans) if s.name.startswith(prefix)]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture
def stack(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, receiver: OtlpReceiver) -> Iterator[Stack]:
    stack = Stack(
        kafka_bootstrap,
        topic_prefix,
        tmp_path,
        partitions=2,
        processors={"p1": "state"},
        app="tests.support.traced_services:app",
        env_extra={"KINVOKE_TRACING_ENDPOINT": receiver.endpoint},
    )
    with running_stack(stack):
        yield stack


def test_a_call_is_traced_from_the_ingress_request_to_the_deployment(
    stack: Stack, receiver: OtlpReceiver
) -> None:
    """The span tree of a call, as Restate's: the ingress request's span (a child of the caller's
    `traceparent`) → the invocation's span → the attempt's span, whose context the deployment
    receives; the handler's input headers keep the caller's `traceparent`."""
    with httpx.Client(timeout=30) as client:
        call = client.post(f"{stack.ingress_url}/Traced/context", json="x", headers={"traceparent": CALLER})
        assert call.status_code == 200, call.text
        # Without a caller's context, the ingress span starts the trace.
        alone = client.post(f"{stack.ingress_url}/Traced/context", json="y")
        assert alone.status_code == 200, alone.text
    invocation_id = call.headers["x-restate-id"]
    seen = call.json()
    assert seen["input_traceparent"] == CALLER  # the caller's, in the invocation's headers
    attempt_header = seen["attempt_traceparent"]
    assert attempt_header is not None, "the deployment got no traceparent on the attempt's request"
    _, trace_id, attempt_span_id, _ = attempt_header.split("-")
    assert trace_id == CALLER_TRACE

    # The batch exporters send within their schedule (5 s): waited for, with a bound.
    stack.wait_until(
        lambda: all(
            len(receiver.named(f"{kind} Traced/context")) == 2 for kind in ("ingress", "invocation", "invoke")
        ),
        30,
        "the ingress and the processor to export the ingress, invocation and attempt spans",
    )

    def tree(invocation_id: str) -> tuple[Any, Any, Any]:
        def of(kind: str) -> Any:
            [span] = [
                s
                for s in receiver.named(f"{kind} Traced/context")
                if any(
                    a.key == "restate.invocation.id" and a.value.string_value == invocation_id
                    for a in s.attributes
                )
            ]
            return span

        return of("ingress"), of("invocation"), of("invoke")

    ingress, invocation, attempt = tree(invocation_id)
    assert ingress.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert ingress.trace_id.hex() == CALLER_TRACE and ingress.parent_span_id.hex() == CALLER_SPAN
    assert invocation.trace_id.hex() == CALLER_TRACE
    assert invocation.parent_span_id == ingress.span_id  # the invocation is the ingress span's child
    assert attempt.trace_id.hex() == CALLER_TRACE
    assert attempt.parent_span_id == invocation.span_id  # the attempt is the invocation's child
    assert attempt.span_id.hex() == attempt_span_id  # and the deployment continues the attempt's span
    assert ingress.start_time_unix_nano <= invocation.start_time_unix_nano <= attempt.start_time_unix_nano
    assert attempt.end_time_unix_nano <= invocation.end_time_unix_nano
    assert attempt.end_time_unix_nano <= ingress.end_time_unix_nano  # answered after the attempt ended

    ingress, invocation, attempt = tree(alone.headers["x-restate-id"])
    assert ingress.parent_span_id == b"" and ingress.trace_id.hex() != CALLER_TRACE
    assert invocation.trace_id == ingress.trace_id and invocation.parent_span_id == ingress.span_id
    assert attempt.trace_id == ingress.trace_id and attempt.parent_span_id == invocation.span_id
    assert alone.json()["attempt_traceparent"].split("-")[1:3] == [
        ingress.trace_id.hex(),
        attempt.span_id.hex(),
    ]
