"""Tracing: the invocation span's ids are derived (any processor computes the same), attempt spans
are its children and carry `traceparent` to the deployment, the caller's trace is kept."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from processor.invoker.attempt import AttemptRequest, DeploymentTarget, Invoker
from processor.service import ProcessorService
from processor.tracing import Tracing, input_traceparent, invocation_span_context, parse_traceparent
from schemas.records import Header
from schemas.service_protocol.messages import input_command
from schemas.settings import Settings
from tests.unit.runtime.conftest import invocation_on, record, running_task
from tests.unit.state_machine.conftest import invoke

CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER = f"00-{CALLER_TRACE:032x}-00f067aa0ba902b7-01"
INV = "inv_1evm0iKEK2o12P1GWYBD4oLsy3Ow0SX85z"


def test_tracing_is_off_by_default() -> None:
    tracing = Tracing(Settings())
    assert not tracing.enabled
    assert tracing.start_attempt(INV, CALLER, "Greeter/greet", 1) == (None, {})


def test_the_invocation_span_context_is_derived_from_the_id_in_the_callers_trace() -> None:
    ctx = invocation_span_context(INV, CALLER)
    assert ctx.trace_id == CALLER_TRACE and ctx == invocation_span_context(INV, CALLER)
    assert ctx.span_id != invocation_span_context("inv_other", CALLER).span_id
    alone = invocation_span_context(INV, None)  # no caller: a trace of its own, still derived
    assert alone.trace_id != CALLER_TRACE and alone == invocation_span_context(INV, "not a traceparent")


def test_attempt_and_invocation_spans_form_one_trace() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(Settings(), exporter=exporter)
    span, headers = tracing.start_attempt(INV, CALLER, "Greeter/greet", 1)
    sent = parse_traceparent(headers["traceparent"])
    assert sent is not None and sent.trace_id == CALLER_TRACE
    Tracing.end_attempt(span, "failed", "boom")
    tracing.invocation_completed(INV, CALLER, "Greeter/greet", 1_000, 1_250, None)
    tracing.shutdown()
    attempt, invocation = exporter.get_finished_spans()
    expected = invocation_span_context(INV, CALLER)
    assert attempt.name == "invoke Greeter/greet" and attempt.parent is not None
    assert attempt.parent.span_id == expected.span_id
    assert attempt.context.span_id == sent.span_id  # the deployment continues the attempt's span
    assert (
        attempt.status.status_code.name == "ERROR"
        and attempt.attributes["restate.attempt.outcome"] == "failed"
    )
    assert invocation.name == "invocation Greeter/greet"
    assert (invocation.context.trace_id, invocation.context.span_id) == (CALLER_TRACE, expected.span_id)
    assert invocation.parent is not None and invocation.parent.span_id == 0x00F067AA0BA902B7
    assert (invocation.start_time, invocation.end_time) == (1_000_000_000, 1_250_000_000)


def test_the_callers_traceparent_is_read_from_the_input_command() -> None:
    frame = input_command(b'"x"', [("content-type", "application/json"), ("traceparent", CALLER)])
    assert input_traceparent(frame) == CALLER
    assert input_traceparent(input_command(b'"x"', [])) is None


def test_the_attempt_request_carries_the_trace_headers() -> None:
    request = AttemptRequest(
        INV, b"", "Greeter", "greet", None, [], None, trace_headers={"traceparent": CALLER}
    )
    headers = Invoker._headers(DeploymentTarget(uri="http://d"), request, 6)
    assert headers["traceparent"] == CALLER


def test_a_caller_that_does_not_sample_is_followed() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(Settings(), exporter=exporter)
    unsampled = CALLER[:-2] + "00"
    span, headers = tracing.start_attempt(INV, unsampled, "Greeter/greet", 1)
    Tracing.end_attempt(span, "ended")
    tracing.invocation_completed(INV, unsampled, "Greeter/greet", 1_000, 1_250, None)
    tracing.shutdown()
    assert exporter.get_finished_spans() == ()
    assert headers["traceparent"].endswith("-00")  # the deployment is told not to sample either


def test_the_invocation_spans_parent_is_the_ingress_span_carried_in_the_invoke(
    processor: ProcessorService,
) -> None:
    """The Invoke's span_context (the ingress request's span) wins over the caller's traceparent
    in the input headers, which stays the fallback for invocations produced without one."""
    ingress_span = f"00-{CALLER_TRACE:032x}-1111111111111111-01"
    task = running_task(0, 10)
    processor.tasks.tasks[0] = task
    a, b = invocation_on(0), invocation_on(0, 1)
    with_span = invoke(inv=a)
    with_span.body.span_context = ingress_span  # type: ignore[union-attr]
    with_span.body.headers = [Header(name="traceparent", value=CALLER)]  # type: ignore[union-attr]
    without = invoke(inv=b)
    without.body.headers = [Header(name="traceparent", value=CALLER)]  # type: ignore[union-attr]
    processor.process([record(0, 10, with_span), record(0, 11, without)])
    assert processor._traceparent(task, a) == ingress_span
    assert processor._traceparent(task, b) == CALLER
