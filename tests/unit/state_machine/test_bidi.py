"""Attempts on a bidirectional stream: entries journaled while the attempt runs
(AttemptProgress), and the notifications that go back on the open stream (NotifyAttempt)."""

from __future__ import annotations

from processor.state_machine import InvokeAttempt, NotifyAttempt, ScheduleTimer, SendResult
from schemas.records import (
    AttemptProgress,
    Command,
    Ended,
    InvocationPhase,
    ManageInvocation,
    ManageOperation,
    ResolvedCallee,
    ServiceType,
    Success,
)
from schemas.service_protocol import Frame, MessageType, decode_message, encode_message
from schemas.service_protocol import protocol_pb2 as pb
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output, propose, run


def progress(ts: int, n: int, entries: list[bytes], callees: list[ResolvedCallee] | None = None) -> Command:
    return Command(
        timestamp_ms=ts,
        body=AttemptProgress(
            invocation_id=INV,
            attempt=n,
            deployment_id="dp_1",
            protocol_version=6,
            new_entries=entries,
            callees=callees or [],
        ),
    )


def notified(actions: list) -> list[tuple[int, MessageType]]:
    return [(a.attempt, Frame.parse(a.frame).type) for a in actions if isinstance(a, NotifyAttempt)]


def test_a_run_proposal_on_an_open_stream_is_journaled_and_its_completion_sent_back(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(progress(1100, 1, [run(1), propose(1, b"6")]))
    assert notified(actions) == [(1, MessageType.RUN_COMPLETION_NOTIFICATION)]
    status = sm.store.status(INV)
    assert status is not None and status.phase == InvocationPhase.INVOKED and status.attempt == 1
    assert [Frame.parse(e.frame).type for e in sm.store.journal(INV)][1:] == [
        MessageType.RUN_COMMAND,
        MessageType.RUN_COMPLETION_NOTIFICATION,
    ]
    # The same attempt goes on and ends: nothing is sent to its closed stream.
    done = sm.apply(attempt(1200, 1, [output(b"6")], Ended()))
    assert notified(done) == [] and [type(a) for a in done if not isinstance(a, ScheduleTimer)] == [
        SendResult
    ]


def test_progress_of_another_attempt_changes_nothing(sm: Harness) -> None:
    sm.apply(invoke())
    before = len(sm.writes)
    assert sm.apply(progress(1100, 2, [run(1)])) == []
    assert sm.apply(progress(1100, 0, [run(1)])) == []
    assert len(sm.writes) == before


def test_a_cancel_reaches_the_running_attempt(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(
        Command(timestamp_ms=2000, body=ManageInvocation(invocation_id=INV, operation=ManageOperation.CANCEL))
    )
    [(n, ty)] = notified(actions)
    assert (n, ty) == (1, MessageType.SIGNAL_NOTIFICATION)
    [note] = [a for a in actions if isinstance(a, NotifyAttempt)]
    signal = decode_message(Frame.parse(note.frame))
    assert signal.signal_id == 1  # the cancel signal, handled by the SDK in the running handler


def test_a_call_gets_its_invocation_id_on_the_open_stream(sm: Harness) -> None:
    sm.apply(invoke())
    call = encode_message(
        MessageType.CALL_COMMAND,
        pb.CallCommandMessage(
            service_name="Greeter",
            handler_name="greet",
            parameter=b'"x"',
            invocation_id_notification_idx=1,
            result_completion_id=2,
        ),
    )
    callee = ResolvedCallee(service_ty=ServiceType.SERVICE)
    actions = sm.apply(progress(1100, 1, [call], callees=[callee]))
    assert (1, MessageType.CALL_INVOCATION_ID_COMPLETION_NOTIFICATION) in notified(actions)


def test_a_refused_entry_fails_the_running_attempt_and_starts_the_next(sm: Harness) -> None:
    sm.apply(invoke())
    # A Call whose target the registry did not know: refused.
    call = encode_message(
        MessageType.CALL_COMMAND,
        pb.CallCommandMessage(
            service_name="Nope", handler_name="x", invocation_id_notification_idx=1, result_completion_id=2
        ),
    )
    actions = sm.apply(progress(1100, 1, [call], callees=[ResolvedCallee(error="service 'Nope' not found")]))
    status = sm.store.status(INV)
    assert status is not None and status.attempt == 2 and status.retry_count == 1
    assert "Nope" in (status.last_failure.message if status.last_failure else "")
    assert [a for a in actions if isinstance(a, InvokeAttempt)] == [
        InvokeAttempt(INV, 2, status.next_retry_at_ms or 0)
    ]


def test_replaying_progress_and_end_gives_the_same_writes(sm: Harness) -> None:
    log = [
        invoke(),
        progress(1100, 1, [run(1), propose(1, b"6")]),
        progress(1150, 1, [run(2), propose(2, b"7")]),
        attempt(1200, 1, [output(b"13")], Ended()),
    ]
    sm.apply(*log)
    replay = Harness()
    replay.apply(*log)
    assert replay.writes == sm.writes
    status = sm.store.status(INV)
    assert status is not None and status.result == Success(value=b"13")


def test_a_kill_stops_the_running_attempt(sm: Harness) -> None:
    from processor.state_machine import AbortAttempt

    sm.apply(invoke())
    actions = sm.apply(
        Command(timestamp_ms=2000, body=ManageInvocation(invocation_id=INV, operation=ManageOperation.KILL))
    )
    assert AbortAttempt(INV, 1) in actions
    status = sm.store.status(INV)
    assert status is not None and status.phase == InvocationPhase.COMPLETED
