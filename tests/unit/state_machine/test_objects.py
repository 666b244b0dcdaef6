"""Virtual objects: the exclusive lock and inbox, and state commands."""

from __future__ import annotations

from processor.state_machine import InvokeAttempt
from processor.storage import PartitionStore
from schemas.ids import InvocationId, partition_key_of
from schemas.records import (
    AttemptFailed,
    Command,
    Ended,
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
from tests.unit.state_machine.conftest import Harness, attempt, output, output_failure


def inv_id(n: int, key: str = "k1") -> str:
    return str(InvocationId.generate(partition_key_of(key), 1_700_000_000_000 + n, n))


def invoke_object(
    inv: str, handler: str = "add", key: str = "k1", ty: HandlerType = HandlerType.EXCLUSIVE, ts: int = 1000
) -> Command:
    target = InvocationTarget(
        service="Counter", handler=handler, key=key, service_ty=ServiceType.VIRTUAL_OBJECT, handler_ty=ty
    )
    return Command(
        timestamp_ms=ts,
        body=Invoke(
            invocation_id=inv, target=target, argument=b"1", invoked_by=InvokedBy(kind=InvokedByKind.INGRESS)
        ),
    )


def set_state(key: bytes, value: bytes) -> bytes:
    return encode_message(
        MessageType.SET_STATE_COMMAND, pb.SetStateCommandMessage(key=key, value=pb.Value(content=value))
    )


def clear_all() -> bytes:
    return encode_message(MessageType.CLEAR_ALL_STATE_COMMAND, pb.ClearAllStateCommandMessage())


def get_lazy(key: bytes, completion_id: int) -> bytes:
    return encode_message(
        MessageType.GET_LAZY_STATE_COMMAND,
        pb.GetLazyStateCommandMessage(key=key, result_completion_id=completion_id),
    )


def test_exclusive_invocations_of_one_key_run_one_at_a_time_in_order(sm: Harness) -> None:
    a, b, c = inv_id(1), inv_id(2), inv_id(3)
    assert sm.apply(invoke_object(a)) == [InvokeAttempt(a, attempt=1)]
    assert sm.apply(invoke_object(b), invoke_object(c)) == []
    assert sm.store.status(b).phase == InvocationPhase.INBOXED  # type: ignore[union-attr]
    assert sm.store.object("Counter", "k1").locked_by == a
    assert sm.store.object("Counter", "k1").inbox == [b, c]
    # The holder completes: the lock passes to the head of the inbox, which starts.
    actions = sm.apply(attempt(2000, 1, [output(b"1")], Ended(), inv=a))
    assert [x for x in actions if isinstance(x, InvokeAttempt)] == [InvokeAttempt(b, attempt=1)]
    assert sm.store.status(b).phase == InvocationPhase.INVOKED  # type: ignore[union-attr]
    assert sm.store.object("Counter", "k1").locked_by == b
    sm.apply(
        attempt(3000, 1, [output_failure(500, "boom")], Ended(), inv=b)
    )  # a terminal failure frees it too
    assert sm.store.object("Counter", "k1").locked_by == c
    sm.apply(attempt(4000, 1, [output(b"3")], Ended(), inv=c))
    assert ("Counter", "k1") not in sm.store.objects()
    assert ("object/Counter/k1", None) in sm.writes[-4:]  # tombstoned


def test_the_lock_is_held_while_retrying_and_while_suspended(sm: Harness) -> None:
    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), invoke_object(b))
    sm.apply(attempt(2000, 1, [], AttemptFailed(code=500, message="x"), inv=a))
    assert sm.store.object("Counter", "k1").locked_by == a
    sm.apply(attempt(3000, 2, [], Suspended(waiting_completions=[9]), inv=a))
    assert sm.store.status(a).phase == InvocationPhase.SUSPENDED  # type: ignore[union-attr]
    assert sm.store.object("Counter", "k1").locked_by == a
    assert sm.store.status(b).phase == InvocationPhase.INBOXED  # type: ignore[union-attr]


def test_shared_handlers_and_other_keys_do_not_wait(sm: Harness) -> None:
    a, shared, other = inv_id(1), inv_id(2), inv_id(3, key="k2")
    sm.apply(invoke_object(a))
    assert sm.apply(invoke_object(shared, handler="get", ty=HandlerType.SHARED)) == [
        InvokeAttempt(shared, attempt=1)
    ]
    assert sm.apply(invoke_object(other, key="k2")) == [InvokeAttempt(other, attempt=1)]


def test_state_writes_apply_at_once_and_survive_a_terminal_failure(sm: Harness) -> None:
    a = inv_id(1)
    sm.apply(invoke_object(a))
    sm.apply(attempt(2000, 1, [set_state(b"count", b"5"), output_failure(500, "after set")], Ended(), inv=a))
    assert sm.store.state_of("Counter", "k1") == {b"count": b"5"}
    b = inv_id(2)
    sm.apply(invoke_object(b))
    sm.apply(attempt(3000, 1, [clear_all(), set_state(b"x", b"1")], Ended(), inv=b))
    assert sm.store.state_of("Counter", "k1") == {b"x": b"1"}


def test_shared_handlers_cannot_write_state(sm: Harness) -> None:
    shared = inv_id(1)
    sm.apply(invoke_object(shared, handler="get", ty=HandlerType.SHARED))
    sm.apply(attempt(2000, 1, [set_state(b"count", b"5")], Ended(), inv=shared))
    status = sm.store.status(shared)
    assert status is not None and status.phase == InvocationPhase.INVOKED
    assert isinstance(status.last_failure, AttemptFailed) and "shared handler" in status.last_failure.message
    assert sm.store.state_of("Counter", "k1") == {}


def test_lazy_state_read_is_answered_with_a_notification(sm: Harness) -> None:
    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), attempt(2000, 1, [set_state(b"count", b"7"), output(b"")], Ended(), inv=a))
    sm.apply(invoke_object(b))
    actions = sm.apply(attempt(3000, 1, [get_lazy(b"count", 1)], Suspended(waiting_completions=[1]), inv=b))
    assert actions == [InvokeAttempt(b, attempt=2)]  # the answer is already in the journal
    note = decode_message(Frame.parse(sm.store.journal(b)[-1].frame))
    assert note.completion_id == 1 and note.value.content == b"7"


def test_objects_and_state_are_rebuilt_from_the_changelog(sm: Harness) -> None:
    a, b = inv_id(1), inv_id(2, key="a/b")
    sm.apply(invoke_object(a), invoke_object(inv_id(3)))
    sm.apply(
        invoke_object(b, key="a/b"), attempt(2000, 1, [set_state("ключ".encode(), b"v")], Ended(), inv=b)
    )
    restored = PartitionStore(0)
    for key, value in sm.writes:
        restored.restore(key, value)
    assert restored.objects() == sm.store.objects()
    assert restored.state() == sm.store.state() == {("Counter", "a/b"): {"ключ".encode(): b"v"}}
