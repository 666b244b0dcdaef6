"""Service-to-service calls: children are created deterministically and results flow back."""

from __future__ import annotations

from processor.state_machine import InvokeAttempt, ProduceCommand, SendResult
from schemas.ids import InvocationId
from schemas.records import (
    AttemptEnded,
    CallCompleted,
    Command,
    Ended,
    Failure,
    HandlerType,
    InvocationPhase,
    Invoke,
    InvokedByKind,
    ResolvedCallee,
    ServiceType,
    Success,
    Suspended,
)
from schemas.service_protocol import Frame, MessageType, decode_message, encode_message
from schemas.service_protocol import protocol_pb2 as pb
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output

GREETER = ResolvedCallee(service_ty=ServiceType.SERVICE)


def call_frame(service: str = "Greeter", handler: str = "greet", key: str = "") -> bytes:
    msg = pb.CallCommandMessage(
        service_name=service,
        handler_name=handler,
        parameter=b'"Dave"',
        key=key,
        invocation_id_notification_idx=1,
        result_completion_id=2,
    )
    return encode_message(MessageType.CALL_COMMAND, msg)


def attempt_with_calls(
    ts: int, n: int, entries: list[bytes], callees: list[ResolvedCallee], outcome
) -> Command:
    return attempt(ts, n, entries, outcome, callees=callees)


def children(actions: list) -> list[Invoke]:
    return [
        a.command.body
        for a in actions
        if isinstance(a, ProduceCommand) and isinstance(a.command.body, Invoke)
    ]


def test_call_creates_a_child_and_journals_its_id(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(
        attempt_with_calls(2000, 1, [call_frame()], [GREETER], Suspended(waiting_completions=[2]))
    )
    [child] = children(actions)
    assert child.target.service == "Greeter" and child.target.key is None
    assert child.caller is not None and (child.caller.invocation_id, child.caller.completion_id) == (INV, 2)
    assert child.invoked_by.kind == InvokedByKind.SERVICE and child.invoked_by.invocation_id == INV
    # Call command, then the CallInvocationId notification (completion id 1) with the child's id.
    journal = sm.store.journal(INV)
    assert [Frame.parse(e.frame).type for e in journal[1:]] == [
        MessageType.CALL_COMMAND,
        MessageType.CALL_INVOCATION_ID_COMPLETION_NOTIFICATION,
    ]
    note = decode_message(Frame.parse(journal[2].frame))
    assert note.completion_id == 1 and note.invocation_id == child.invocation_id
    # Waiting for the result (2): suspended until it arrives.
    assert sm.store.status(INV).phase == InvocationPhase.SUSPENDED  # type: ignore[union-attr]


def test_the_child_id_is_deterministic(sm: Harness) -> None:
    log = [
        invoke(),
        attempt_with_calls(2000, 1, [call_frame()], [GREETER], Suspended(waiting_completions=[2])),
    ]
    first = children(sm.apply(*log))
    again = children(Harness().apply(*log))
    assert first == again
    assert InvocationId.parse(first[0].invocation_id).timestamp_ms == InvocationId.parse(INV).timestamp_ms


def test_call_completed_resumes_the_suspended_caller_once(sm: Harness) -> None:
    sm.apply(invoke())
    [child] = children(
        sm.apply(attempt_with_calls(2000, 1, [call_frame()], [GREETER], Suspended(waiting_completions=[2])))
    )
    done = Command(
        timestamp_ms=3000,
        body=CallCompleted(
            invocation_id=INV, completion_id=2, callee_id=child.invocation_id, result=Success(value=b"1")
        ),
    )
    assert sm.apply(done) == [InvokeAttempt(INV, attempt=2)]
    note = decode_message(Frame.parse(sm.store.journal(INV)[-1].frame))
    assert note.completion_id == 2 and note.value.content == b"1"
    before = len(sm.writes)
    assert sm.apply(done) == [] and len(sm.writes) == before  # a redelivery changes nothing


def test_a_completed_callee_reports_to_its_caller(sm: Harness) -> None:
    sm.apply(invoke())
    [child] = children(
        sm.apply(attempt_with_calls(2000, 1, [call_frame()], [GREETER], Suspended(waiting_completions=[2])))
    )
    callee = Harness()
    callee.apply(Command(timestamp_ms=2000, body=child))
    ended = Command(
        timestamp_ms=2500,
        body=AttemptEnded(
            invocation_id=child.invocation_id,
            attempt=1,
            deployment_id="dp_1",
            protocol_version=6,
            new_entries=[output(b'"Hello Dave"')],
            outcome=Ended(),
        ),
    )
    [report] = [a for a in callee.apply(ended) if isinstance(a, ProduceCommand)]
    assert report.partition_key == InvocationId.parse(INV).partition_key
    assert report.command.body == CallCompleted(
        invocation_id=INV,
        completion_id=2,
        callee_id=child.invocation_id,
        result=Success(value=b'"Hello Dave"'),
    )


def test_unknown_callee_fails_the_attempt(sm: Harness) -> None:
    sm.apply(invoke())
    bad = ResolvedCallee(error="service 'Nope' not found")
    actions = sm.apply(
        attempt_with_calls(2000, 1, [call_frame("Nope")], [bad], Suspended(waiting_completions=[2]))
    )
    assert children(actions) == []
    status = sm.store.status(INV)
    assert status is not None and status.last_failure is not None and "Nope" in status.last_failure.message


def test_calling_an_object_routes_by_its_key(sm: Harness) -> None:
    sm.apply(invoke())
    counter = ResolvedCallee(service_ty=ServiceType.VIRTUAL_OBJECT, handler_ty=HandlerType.EXCLUSIVE)
    actions = sm.apply(
        attempt_with_calls(
            2000, 1, [call_frame("Counter", "add", "k3")], [counter], Suspended(waiting_completions=[2])
        )
    )
    [child] = children(actions)
    [produce] = [a for a in actions if isinstance(a, ProduceCommand)]
    assert child.target.key == "k3" and child.target.handler_ty == HandlerType.EXCLUSIVE
    from schemas.ids import partition_key_of

    assert produce.partition_key == partition_key_of("k3")
    failure = Command(
        timestamp_ms=3000,
        body=CallCompleted(
            invocation_id=INV,
            completion_id=2,
            callee_id=child.invocation_id,
            result=Failure(code=418, message="no"),
        ),
    )
    sm.apply(failure)
    note = decode_message(Frame.parse(sm.store.journal(INV)[-1].frame))
    assert (note.failure.code, note.failure.message) == (418, "no")


def test_a_terminal_errors_metadata_reaches_the_caller_and_the_results(sm: Harness) -> None:
    """Restate carries a TerminalError's metadata (protocol V6 Failure.metadata) from the callee's
    output to its caller's completion and to the ingress's answer."""
    sm.apply(invoke())
    [child] = children(
        sm.apply(attempt_with_calls(2000, 1, [call_frame()], [GREETER], Suspended(waiting_completions=[2])))
    )
    failed = pb.Failure(code=422, message="bad name")
    failed.metadata.add(key="field", value="name")
    frame = encode_message(MessageType.OUTPUT_COMMAND, pb.OutputCommandMessage(failure=failed))
    callee = Harness()
    callee.apply(Command(timestamp_ms=2000, body=child))
    ended = attempt(2500, 1, [frame], Ended(), inv=child.invocation_id)
    [report] = [a for a in callee.apply(ended) if isinstance(a, ProduceCommand)]
    expected = Failure(code=422, message="bad name", metadata={"field": "name"})
    assert isinstance(report.command.body, CallCompleted) and report.command.body.result == expected
    sm.apply(report.command)
    note = decode_message(Frame.parse(sm.store.journal(INV)[-1].frame))
    assert (note.failure.code, note.failure.message) == (422, "bad name")
    assert {m.key: m.value for m in note.failure.metadata} == {"field": "name"}
    done = sm.apply(attempt(3000, 2, [frame], Ended()))
    [result] = [a.result for a in done if isinstance(a, SendResult)]
    assert result.result == expected
