"""Workflows: once per key, and durable promises shared by the workflow's handlers."""

from __future__ import annotations

from processor.state_machine import InvokeAttempt, SendResult
from schemas.ids import InvocationId
from schemas.records import (
    Command,
    Ended,
    Failure,
    HandlerType,
    InvocationPhase,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
    Suspended,
)
from schemas.service_protocol import Frame, MessageType, decode_message, encode_message
from schemas.service_protocol import protocol_pb2 as pb
from tests.unit.state_machine.conftest import Harness, attempt, output

RUN = str(InvocationId.for_workflow("Signup", "wf-1"))
CONFIRM = str(InvocationId.generate(InvocationId.parse(RUN).partition_key, 1_700_000_000_000, 5))


def invoke_wf(inv: str, handler: str, ty: HandlerType, ts: int = 1000, reply: bool = True) -> Command:
    target = InvocationTarget(
        service="Signup", handler=handler, key="wf-1", service_ty=ServiceType.WORKFLOW, handler_ty=ty
    )
    return Command(
        timestamp_ms=ts,
        body=Invoke(
            invocation_id=inv,
            target=target,
            argument=b'"x"',
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
            reply_to_results=reply,
        ),
    )


def get_promise(completion_id: int) -> bytes:
    return encode_message(
        MessageType.GET_PROMISE_COMMAND,
        pb.GetPromiseCommandMessage(key="confirmation", result_completion_id=completion_id),
    )


def complete_promise(value: bytes, completion_id: int) -> bytes:
    msg = pb.CompletePromiseCommandMessage(
        key="confirmation", completion_value=pb.Value(content=value), result_completion_id=completion_id
    )
    return encode_message(MessageType.COMPLETE_PROMISE_COMMAND, msg)


def last_note(sm: Harness, inv: str):
    return decode_message(Frame.parse(sm.store.journal(inv)[-1].frame))


def test_completing_a_promise_wakes_the_waiting_run_handler(sm: Harness) -> None:
    sm.apply(invoke_wf(RUN, "run", HandlerType.WORKFLOW))
    sm.apply(attempt(2000, 1, [get_promise(1)], Suspended(waiting_completions=[1]), inv=RUN))
    assert sm.store.status(RUN).phase == InvocationPhase.SUSPENDED  # type: ignore[union-attr]
    sm.apply(invoke_wf(CONFIRM, "confirm", HandlerType.SHARED))
    actions = sm.apply(
        attempt(3000, 1, [complete_promise(b'"code-42"', 1)], Suspended(waiting_completions=[1]), inv=CONFIRM)
    )
    # The completer's own answer (void) is in its journal already, so it resumes too.
    assert set(actions) == {InvokeAttempt(RUN, attempt=2), InvokeAttempt(CONFIRM, attempt=2)}
    note = last_note(sm, RUN)
    assert note.completion_id == 1 and note.value.content == b'"code-42"'
    assert last_note(sm, CONFIRM).WhichOneof("result") == "void"


def test_a_promise_completes_once(sm: Harness) -> None:
    sm.apply(invoke_wf(CONFIRM, "confirm", HandlerType.SHARED))
    sm.apply(
        attempt(
            2000,
            1,
            [complete_promise(b"1", 1), complete_promise(b"2", 2)],
            Suspended(waiting_completions=[2]),
            inv=CONFIRM,
        )
    )
    second = last_note(sm, CONFIRM)
    assert (second.failure.code, second.failure.message) == (409, "promise was already completed")
    assert sm.store.promise("Signup", "wf-1", "confirmation").result.value == b"1"  # type: ignore[union-attr]


def test_the_run_handler_runs_once_per_key(sm: Harness) -> None:
    sm.apply(invoke_wf(RUN, "run", HandlerType.WORKFLOW), attempt(2000, 1, [output(b"{}")], Ended(), inv=RUN))
    [answer] = sm.apply(invoke_wf(RUN, "run", HandlerType.WORKFLOW, ts=5000))
    assert isinstance(answer, SendResult)
    assert answer.result.result == Failure(code=409, message="the workflow method was already invoked")
