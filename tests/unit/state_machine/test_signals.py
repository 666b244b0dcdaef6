"""Awakeables and signals: completions reach the target's journal once and wake it."""

from __future__ import annotations

from processor.state_machine import InvokeAttempt, ProduceCommand
from schemas.ids import InvocationId, awakeable_id
from schemas.records import Command, Failure, InvocationPhase, Signal, Success, Suspended
from schemas.service_protocol import Frame, MessageType, decode_message, encode_message
from schemas.service_protocol import protocol_pb2 as pb
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke


def test_resolving_an_awakeable_wakes_the_waiter_once(sm: Harness) -> None:
    sm.apply(invoke())
    sm.apply(attempt(2000, 1, [], Suspended(waiting_signals=[17, 1])))
    resolve = Command(
        timestamp_ms=3000, body=Signal(invocation_id=INV, signal_id=17, result=Success(value=b'"ok"'))
    )
    assert sm.apply(resolve) == [InvokeAttempt(INV, attempt=2)]
    note = decode_message(Frame.parse(sm.store.journal(INV)[-1].frame))
    assert note.signal_id == 17 and note.value.content == b'"ok"'
    before = len(sm.writes)
    reject = Command(
        timestamp_ms=3100, body=Signal(invocation_id=INV, signal_id=17, result=Failure(code=500, message="x"))
    )
    assert sm.apply(reject) == [] and len(sm.writes) == before  # completed once; later ones are ignored


def test_a_signal_for_something_not_awaited_is_journaled_without_waking(sm: Harness) -> None:
    sm.apply(invoke())
    sm.apply(attempt(2000, 1, [], Suspended(waiting_completions=[3])))
    assert sm.apply(Command(timestamp_ms=3000, body=Signal(invocation_id=INV, signal_name="go"))) == []
    assert sm.store.status(INV).phase == InvocationPhase.SUSPENDED  # type: ignore[union-attr]
    note = decode_message(Frame.parse(sm.store.journal(INV)[-1].frame))
    assert note.signal_name == "go" and note.WhichOneof("result") == "void"


def test_complete_awakeable_command_targets_the_owner_of_the_awakeable(sm: Harness) -> None:
    other = InvocationId.generate(99, 1_700_000_000_000, 7)
    aid = awakeable_id(other.to_bytes(), 18)
    sm.apply(invoke())
    frame = encode_message(
        MessageType.COMPLETE_AWAKEABLE_COMMAND,
        pb.CompleteAwakeableCommandMessage(awakeable_id=aid, value=pb.Value(content=b"1")),
    )
    actions = sm.apply(attempt(2000, 1, [frame], Suspended(waiting_signals=[1])))
    [produce] = [a for a in actions if isinstance(a, ProduceCommand)]
    assert produce.partition_key == 99
    assert produce.command.body == Signal(invocation_id=str(other), signal_id=18, result=Success(value=b"1"))
