"""Kill takes the call tree down: callees still awaited (recursively), not one-way sends; every
lock held on the way is released."""

from __future__ import annotations

from processor.state_machine import Action, InvokeAttempt, ProduceCommand
from processor.state_machine.lifecycle.call_tree import running_callees
from schemas.records import (
    CallCompleted,
    Command,
    Failure,
    HandlerType,
    InvocationPhase,
    ManageInvocation,
    ManageOperation,
    ResolvedCallee,
    ServiceType,
    Suspended,
)
from schemas.service_protocol import MessageType, encode_message
from schemas.service_protocol import protocol_pb2 as pb
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke
from tests.unit.state_machine.test_calls import GREETER, call_frame, children
from tests.unit.state_machine.test_objects import inv_id, invoke_object

COUNTER = ResolvedCallee(service_ty=ServiceType.VIRTUAL_OBJECT, handler_ty=HandlerType.EXCLUSIVE)
KILLED = Failure(code=409, message="killed")


def send_frame() -> bytes:
    msg = pb.OneWayCallCommandMessage(
        service_name="Greeter", handler_name="greet", parameter=b'"Eve"', invocation_id_notification_idx=3
    )
    return encode_message(MessageType.ONE_WAY_CALL_COMMAND, msg)


def kills(actions: list[Action]) -> list[Command]:
    return [
        a.command
        for a in actions
        if isinstance(a, ProduceCommand) and isinstance(a.command.body, ManageInvocation)
    ]


def test_kill_kills_the_awaited_callees_recursively_and_releases_their_locks(sm: Harness) -> None:
    # INV calls Counter/k1/add (it takes the object's lock) and sends Greeter/greet one way.
    sm.apply(invoke())
    started = sm.apply(
        attempt(
            2000,
            1,
            [call_frame("Counter", "add", key="k1"), send_frame()],
            Suspended(waiting_completions=[2]),
            callees=[COUNTER, GREETER],
        )
    )
    counter_call, greeter_send = children(started)
    sm.apply(*(Command(timestamp_ms=2100, body=c) for c in (counter_call, greeter_send)))
    assert sm.store.object("Counter", "k1").locked_by == counter_call.invocation_id
    # The Counter invocation calls Greeter in turn; another Counter/k1 call waits in the inbox.
    grand = sm.apply(
        attempt(
            2200,
            1,
            [call_frame()],
            Suspended(waiting_completions=[2]),
            inv=counter_call.invocation_id,
            callees=[GREETER],
        )
    )
    [grandchild] = children(grand)
    waiting = inv_id(9)
    sm.apply(Command(timestamp_ms=2300, body=grandchild), invoke_object(waiting, ts=2300))
    assert running_callees(sm.store.journal(INV)) == [counter_call.invocation_id]

    # Kill INV: one kill is sent, to the awaited callee (not to the one-way send).
    actions = sm.apply(
        Command(timestamp_ms=3000, body=ManageInvocation(invocation_id=INV, operation=ManageOperation.KILL))
    )
    [kill_counter] = kills(actions)
    assert kill_counter.body == ManageInvocation(
        invocation_id=counter_call.invocation_id, operation=ManageOperation.KILL
    )
    # Its partition applies it: the Counter invocation is killed, kills its own callee, and its
    # lock passes to the invocation waiting in the inbox.
    actions = sm.apply(kill_counter)
    [kill_grandchild] = kills(actions)
    assert kill_grandchild.body.invocation_id == grandchild.invocation_id  # type: ignore[union-attr]
    assert InvokeAttempt(waiting, attempt=1) in actions
    assert sm.store.object("Counter", "k1").locked_by == waiting
    sm.apply(kill_grandchild)
    for killed in (INV, counter_call.invocation_id, grandchild.invocation_id):
        status = sm.store.status(killed)
        assert status is not None and status.phase == InvocationPhase.COMPLETED and status.result == KILLED
    sent = sm.store.status(greeter_send.invocation_id)
    assert sent is not None and sent.phase == InvocationPhase.INVOKED


def test_a_callee_already_completed_is_not_killed(sm: Harness) -> None:
    sm.apply(invoke())
    [child] = children(
        sm.apply(attempt(2000, 1, [call_frame()], Suspended(waiting_completions=[2]), callees=[GREETER]))
    )
    done = CallCompleted(
        invocation_id=INV,
        completion_id=2,
        callee_id=child.invocation_id,
        result=Failure(code=500, message="x"),
    )
    sm.apply(Command(timestamp_ms=2500, body=done))
    assert running_callees(sm.store.journal(INV)) == []
    kill = Command(
        timestamp_ms=3000, body=ManageInvocation(invocation_id=INV, operation=ManageOperation.KILL)
    )
    assert kills(sm.apply(kill)) == []
