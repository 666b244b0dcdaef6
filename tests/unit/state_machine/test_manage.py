"""Cancel, kill and purge applied by the state machine."""

from __future__ import annotations

from processor.state_machine import InvokeAttempt, SendAccepted, SendResult
from schemas.records import (
    Command,
    Ended,
    Failure,
    InvocationPhase,
    ManageAnswer,
    ManageInvocation,
    ManageOperation,
    ManageOutcome,
    Suspended,
)
from schemas.service_protocol import Frame, MessageType, decode_message
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output
from tests.unit.state_machine.test_objects import inv_id, invoke_object


def manage(inv: str, op: ManageOperation, ts: int = 5000) -> Command:
    return Command(timestamp_ms=ts, body=ManageInvocation(invocation_id=inv, operation=op))


def answer(actions: list, inv: str = INV) -> ManageOutcome:
    [a] = [x.accepted for x in actions if isinstance(x, SendAccepted)]
    assert isinstance(a, ManageAnswer) and a.invocation_id == inv
    return a.outcome


def test_cancel_sends_signal_1_and_wakes_a_suspended_invocation(sm: Harness) -> None:
    sm.apply(invoke(), attempt(2000, 1, [], Suspended(waiting_completions=[1], waiting_signals=[1])))
    actions = sm.apply(manage(INV, ManageOperation.CANCEL))
    assert answer(actions) == ManageOutcome.ACCEPTED
    assert InvokeAttempt(INV, attempt=2) in actions
    note = decode_message(Frame.parse(sm.store.journal(INV)[-1].frame))
    assert Frame.parse(sm.store.journal(INV)[-1].frame).type == MessageType.SIGNAL_NOTIFICATION
    assert note.signal_id == 1 and note.WhichOneof("result") == "void"


def test_cancel_of_an_inboxed_invocation_completes_it_and_leaves_the_inbox(sm: Harness) -> None:
    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), invoke_object(b))
    assert answer(sm.apply(manage(b, ManageOperation.CANCEL)), b) == ManageOutcome.DONE
    status = sm.store.status(b)
    assert status is not None and status.result == Failure(code=409, message="cancelled")
    assert sm.store.object("Counter", "k1").inbox == []
    assert sm.store.object("Counter", "k1").locked_by == a


def test_kill_completes_with_killed_and_passes_the_lock_on(sm: Harness) -> None:
    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), invoke_object(b))
    actions = sm.apply(manage(a, ManageOperation.KILL))
    assert answer(actions, a) == ManageOutcome.DONE
    assert sm.store.status(a).result == Failure(code=409, message="killed")  # type: ignore[union-attr]
    assert InvokeAttempt(b, attempt=1) in actions
    # The killed attempt's late effect changes nothing.
    before = len(sm.writes)
    sm.apply(attempt(6000, 1, [output(b"1")], Ended(), inv=a))
    assert len(sm.writes) == before


def test_purge_only_completed_invocations(sm: Harness) -> None:
    sm.apply(invoke())
    assert answer(sm.apply(manage(INV, ManageOperation.PURGE))) == ManageOutcome.NOT_COMPLETED
    sm.apply(attempt(2000, 1, [output(b"1")], Ended()))
    assert answer(sm.apply(manage(INV, ManageOperation.CANCEL))) == ManageOutcome.ALREADY_COMPLETED
    assert answer(sm.apply(manage(INV, ManageOperation.PURGE))) == ManageOutcome.DONE
    assert sm.store.status(INV) is None and sm.store.journal(INV) == []
    assert answer(sm.apply(manage(INV, ManageOperation.PURGE))) == ManageOutcome.NOT_FOUND


def test_a_killed_call_reports_to_the_waiting_ingress(sm: Harness) -> None:
    sm.apply(invoke(reply=True))
    results = [a for a in sm.apply(manage(INV, ManageOperation.KILL)) if isinstance(a, SendResult)]
    assert [r.result.result for r in results] == [Failure(code=409, message="killed")]
    assert sm.store.status(INV).phase == InvocationPhase.COMPLETED  # type: ignore[union-attr]
