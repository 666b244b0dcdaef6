"""Pause and resume (PATCH /invocations/{id}/pause|resume) applied by the state machine."""

from __future__ import annotations

from processor.state_machine import AbortAttempt, Action, InvokeAttempt, SendAccepted
from schemas.records import (
    AttemptFailed,
    Command,
    Ended,
    InvocationOperation,
    InvocationPhase,
    InvocationStatus,
    ManageAnswer,
    ManageInvocation,
    ManageOperation,
    ManageOutcome,
    OperateInvocation,
    OperationAnswer,
    OperationOutcome,
    Signal,
    Success,
    Suspended,
)
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output, sleep
from tests.unit.state_machine.test_objects import inv_id, invoke_object
from tests.unit.state_machine.test_retention import with_options


def operate(inv: str, op: InvocationOperation, ts: int = 5000, **fields: object) -> Command:
    return Command(timestamp_ms=ts, body=OperateInvocation(invocation_id=inv, operation=op, **fields))


def answer(actions: list[Action], inv: str = INV) -> OperationAnswer:
    [a] = [x.accepted for x in actions if isinstance(x, SendAccepted)]
    assert isinstance(a, OperationAnswer) and a.invocation_id == inv
    return a


def status(sm: Harness, inv: str = INV) -> InvocationStatus:
    found = sm.store.status(inv)
    assert found is not None
    return found


PAUSE, RESUME = InvocationOperation.PAUSE, InvocationOperation.RESUME


def test_pausing_a_running_invocation_aborts_its_attempt_and_fences_its_effects(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(operate(INV, PAUSE))
    assert answer(actions).outcome == OperationOutcome.ACCEPTED
    assert AbortAttempt(INV, 1) in actions
    assert status(sm).phase == InvocationPhase.PAUSED
    # What the aborted attempt still reports changes nothing: no output, no result.
    before = len(sm.writes)
    sm.apply(attempt(6000, 1, [output(b'"late"')], Ended()))
    assert len(sm.writes) == before and status(sm).phase == InvocationPhase.PAUSED
    # Paused again: Restate's 200 "already paused".
    assert answer(sm.apply(operate(INV, PAUSE, ts=7000))).outcome == OperationOutcome.ALREADY_PAUSED


def test_resume_runs_a_new_attempt_that_completes(sm: Harness) -> None:
    sm.apply(invoke(), operate(INV, PAUSE))
    actions = sm.apply(operate(INV, RESUME, ts=8000))
    assert answer(actions).outcome == OperationOutcome.DONE
    assert InvokeAttempt(INV, attempt=3) in actions
    assert status(sm).phase == InvocationPhase.INVOKED
    sm.apply(attempt(9000, 3, [output(b'"hi"')], Ended()))
    assert status(sm).phase == InvocationPhase.COMPLETED


def test_a_suspended_invocation_is_already_paused_and_stays_suspended(sm: Harness) -> None:
    """Restate 1.7.12 (no vqueues) answers "already paused" (200) and changes nothing: measured,
    the invocation stays suspended and a notification still wakes it."""
    sm.apply(invoke(), attempt(2000, 1, [], Suspended(waiting_completions=[1])))
    before = status(sm)
    actions = sm.apply(operate(INV, PAUSE))
    assert answer(actions).outcome == OperationOutcome.ALREADY_PAUSED
    assert not any(isinstance(a, AbortAttempt) for a in actions)
    assert status(sm) == before and sm.steps[-1].writes == []
    assert InvokeAttempt(INV, attempt=2) in sm.apply(operate(INV, RESUME, ts=6000))


def test_only_running_invocations_pause(sm: Harness) -> None:
    assert answer(sm.apply(operate(INV, PAUSE))).outcome == OperationOutcome.NOT_FOUND
    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), invoke_object(b))  # b waits in the inbox
    assert answer(sm.apply(operate(b, PAUSE)), b).outcome == OperationOutcome.NOT_RUNNING
    sm.apply(invoke(), attempt(2000, 1, [output(b"1")], Ended()))
    assert answer(sm.apply(operate(INV, PAUSE))).outcome == OperationOutcome.NOT_RUNNING


def test_resume_answers_as_restate_for_each_status(sm: Harness) -> None:
    assert answer(sm.apply(operate(INV, RESUME))).outcome == OperationOutcome.NOT_FOUND
    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), invoke_object(b))
    assert answer(sm.apply(operate(b, RESUME)), b).outcome == OperationOutcome.NOT_STARTED
    # A running invocation: nothing to do (200), but its deployment cannot change (409).
    assert answer(sm.apply(operate(a, RESUME)), a).outcome == OperationOutcome.DONE
    moved = operate(a, RESUME, deployment_id="dp_2", deployment_min_protocol=5, deployment_max_protocol=6)
    assert answer(sm.apply(moved), a).outcome == OperationOutcome.CANNOT_CHANGE_DEPLOYMENT
    sm.apply(invoke(), attempt(2000, 1, [output(b"1")], Ended()))
    assert answer(sm.apply(operate(INV, RESUME))).outcome == OperationOutcome.COMPLETED


def test_a_paused_object_invocation_keeps_the_lock_until_it_completes(sm: Harness) -> None:
    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), invoke_object(b), operate(a, PAUSE))
    assert sm.store.object("Counter", "k1").locked_by == a
    sm.apply(operate(a, RESUME, ts=6000))
    actions = sm.apply(attempt(7000, 3, [output(b"1")], Ended(), inv=a))
    assert InvokeAttempt(b, attempt=1) in actions
    assert sm.store.object("Counter", "k1").locked_by == b


def test_resume_of_an_invocation_backing_off_retries_now(sm: Harness) -> None:
    sm.apply(invoke(), attempt(2000, 1, [], AttemptFailed(code=500, message="boom")))
    assert status(sm).next_retry_at_ms == 2500
    actions = sm.apply(operate(INV, RESUME, ts=2100))
    assert answer(actions).outcome == OperationOutcome.DONE
    assert InvokeAttempt(INV, attempt=3) in actions and status(sm).attempt == 3


def test_resume_after_max_attempts_paused_it_starts_counting_again(sm: Harness) -> None:
    sm.apply(with_options(invoke(), retry_max_attempts=1))
    sm.apply(attempt(1100, 1, [], AttemptFailed(code=500, message="boom")))
    assert status(sm).phase == InvocationPhase.PAUSED and status(sm).next_retry_at_ms is None
    assert InvokeAttempt(INV, attempt=2) in sm.apply(operate(INV, RESUME, ts=3000))
    assert status(sm).retry_count == 0 and status(sm).retry_attempts == 0


BOOM = AttemptFailed(code=500, message="boom")


def test_a_pause_while_backing_off_keeps_counting_retries_after_the_resume(sm: Harness) -> None:
    """As measured on Restate 1.7.12: paused after 2 failed attempts (backing off), sys_invocation
    still shows retry_count 2, the cancelled retry time and the last failure; resumed, the count
    goes on (3, 4, ...) while the retry policy's max attempts count from the resume."""
    sm.apply(
        with_options(
            invoke(), retry_max_attempts=3, retry_initial_interval_ms=1000, retry_exponentiation_factor=1
        )
    )
    sm.apply(attempt(1100, 1, [], BOOM), attempt(2200, 2, [], BOOM))  # retry due at 3200
    assert (status(sm).retry_count, status(sm).retry_attempts, status(sm).next_retry_at_ms) == (2, 2, 3200)
    assert answer(sm.apply(operate(INV, PAUSE, ts=2500))).outcome == OperationOutcome.ACCEPTED
    paused = status(sm)
    assert paused.phase == InvocationPhase.PAUSED and paused.attempt == 4  # attempt 3 was aborted
    assert (paused.retry_count, paused.next_retry_at_ms, paused.last_failure) == (2, 3200, BOOM)
    sm.apply(attempt(3300, 3, [], BOOM))  # the aborted attempt's late report is stale
    assert status(sm).retry_count == 2 and status(sm).phase == InvocationPhase.PAUSED
    actions = sm.apply(operate(INV, RESUME, ts=4000))
    assert InvokeAttempt(INV, attempt=5) in actions
    resumed = status(sm)
    assert (resumed.retry_count, resumed.retry_attempts, resumed.next_retry_at_ms) == (2, 0, None)
    # Two more failures: still retrying (the policy's loop started again at the resume) ...
    sm.apply(attempt(4100, 5, [], BOOM), attempt(5200, 6, [], BOOM))
    assert status(sm).phase == InvocationPhase.INVOKED and status(sm).retry_count == 4
    # ... and the third one since the resume uses up its 3 attempts.
    sm.apply(attempt(6300, 7, [], BOOM))
    assert status(sm).phase == InvocationPhase.PAUSED and status(sm).retry_count == 5
    assert status(sm).next_retry_at_ms is None  # paused by the policy: Restate ends the report


def test_a_pause_of_a_running_attempt_starts_the_count_again_on_resume(sm: Harness) -> None:
    """The retry after a failure is running when paused (its time has come): Restate's invoker
    ends its report when that attempt ends, so the resumed invocation counts from 0 again."""
    sm.apply(invoke(), attempt(1100, 1, [], BOOM))  # retry due at 1600
    sm.apply(operate(INV, PAUSE, ts=1700))
    assert status(sm).next_retry_at_ms is None and status(sm).retry_count == 1
    sm.apply(operate(INV, RESUME, ts=1800))
    assert (status(sm).retry_count, status(sm).retry_attempts) == (0, 0)


def test_a_suspended_invocation_resumed_counts_from_zero(sm: Harness) -> None:
    sm.apply(
        invoke(), attempt(1100, 1, [], BOOM), attempt(1700, 2, [sleep(1)], Suspended(waiting_completions=[1]))
    )
    assert (status(sm).retry_count, status(sm).retry_attempts) == (0, 0)  # a suspension ends the report
    sm.apply(operate(INV, RESUME, ts=1900))
    assert status(sm).phase == InvocationPhase.INVOKED
    assert (status(sm).retry_count, status(sm).next_retry_at_ms) == (0, None)


def test_a_cancel_of_an_invocation_paused_while_backing_off_keeps_counting(sm: Harness) -> None:
    sm.apply(invoke(), attempt(1100, 1, [], BOOM), operate(INV, PAUSE, ts=1200))  # retry was due at 1600
    assert status(sm).next_retry_at_ms == 1600
    cancel = ManageInvocation(invocation_id=INV, operation=ManageOperation.CANCEL)
    assert InvokeAttempt(INV, attempt=4) in sm.apply(Command(timestamp_ms=1300, body=cancel))
    resumed = status(sm)
    assert resumed.phase == InvocationPhase.INVOKED
    assert (resumed.retry_count, resumed.retry_attempts, resumed.next_retry_at_ms) == (1, 0, None)


def test_resume_on_another_deployment_repins_when_it_speaks_the_pinned_protocol(sm: Harness) -> None:
    sm.apply(invoke(), attempt(2000, 1, [], Suspended(waiting_completions=[1])))  # pinned dp_1, V6
    old = operate(INV, RESUME, deployment_id="dp_old", deployment_min_protocol=1, deployment_max_protocol=5)
    refused = answer(sm.apply(old))
    assert refused.outcome == OperationOutcome.INCOMPATIBLE_DEPLOYMENT
    assert refused.pinned_protocol_version == 6
    gone = operate(INV, RESUME, deployment_id="dp_gone")
    assert answer(sm.apply(gone)).outcome == OperationOutcome.DEPLOYMENT_NOT_FOUND
    assert status(sm).phase == InvocationPhase.SUSPENDED and status(sm).deployment_id == "dp_1"
    new = operate(INV, RESUME, deployment_id="dp_2", deployment_min_protocol=5, deployment_max_protocol=6)
    assert answer(sm.apply(new)).outcome == OperationOutcome.DONE
    assert status(sm).deployment_id == "dp_2" and status(sm).phase == InvocationPhase.INVOKED


def test_resume_with_a_deployment_needs_one_pinned_except_latest(sm: Harness) -> None:
    sm.apply(invoke(), operate(INV, PAUSE))  # paused before any attempt pinned a deployment
    assert status(sm).deployment_id is None
    some = operate(INV, RESUME, deployment_id="dp_2", deployment_min_protocol=5, deployment_max_protocol=6)
    assert answer(sm.apply(some)).outcome == OperationOutcome.CANNOT_CHANGE_DEPLOYMENT
    latest = operate(INV, RESUME, latest_deployment=True, deployment_id="dp_2")
    assert answer(sm.apply(latest)).outcome == OperationOutcome.DONE
    assert status(sm).deployment_id is None


def test_a_cancel_resumes_a_paused_invocation_so_the_sdk_can_handle_it(sm: Harness) -> None:
    sm.apply(invoke(), operate(INV, PAUSE))
    cancel = ManageInvocation(invocation_id=INV, operation=ManageOperation.CANCEL)
    actions = sm.apply(Command(timestamp_ms=6000, body=cancel))
    [accepted] = [a.accepted for a in actions if isinstance(a, SendAccepted)]
    assert isinstance(accepted, ManageAnswer) and accepted.outcome == ManageOutcome.ACCEPTED  # 202
    assert InvokeAttempt(INV, attempt=3) in actions
    assert status(sm).phase == InvocationPhase.INVOKED


def test_other_notifications_wait_while_paused(sm: Harness) -> None:
    sm.apply(invoke(), operate(INV, PAUSE))
    resolve = Signal(invocation_id=INV, signal_id=17, result=Success(value=b'"ok"'))
    assert sm.apply(Command(timestamp_ms=6000, body=resolve)) == []
    assert status(sm).phase == InvocationPhase.PAUSED and status(sm).journal_length == 2
