"""The invocation lifecycle, table-driven: given these commands, these changelog records and actions."""

from __future__ import annotations

import pytest

from processor import state_machine
from processor.state_machine import InvokeAttempt, ScheduleTimer, SendResult
from processor.state_machine.lifecycle import retention
from processor.storage import PartitionStore
from schemas import changelog
from schemas.records import AttemptFailed, Ended, Failure, InvocationPhase, Success, Suspended
from schemas.service_protocol import Frame, MessageType, decode_message
from tests.unit.state_machine.conftest import (
    INV,
    Harness,
    attach_invocation,
    attempt,
    invoke,
    output,
    output_failure,
    propose,
    run,
    sleep,
)


def journal_types(sm: Harness) -> list[int]:
    return [Frame.parse(e.frame).type for e in sm.store.journal(INV)]


def test_invoke_creates_status_input_entry_and_asks_for_an_attempt(sm: Harness) -> None:
    actions = sm.apply(invoke(ts=1000))
    assert actions == [InvokeAttempt(INV, attempt=1, not_before_ms=0)]
    assert [k for k, _ in sm.writes] == [changelog.journal_key(INV, 0), changelog.status_key(INV)]
    status = sm.store.status(INV)
    assert status is not None
    assert status.phase == InvocationPhase.INVOKED
    assert status.created_at_ms == 1000
    assert status.journal_length == 1
    assert journal_types(sm) == [MessageType.INPUT_COMMAND]
    assert decode_message(Frame.parse(sm.store.journal(INV)[0].frame)).value.content == b'"Alice"'


def test_output_and_end_complete_and_answer_the_ingress(sm: Harness) -> None:
    sm.apply(invoke(ts=1000))
    actions = sm.apply(attempt(1100, 1, [output(b'"Hello Alice"')], Ended()))
    status = sm.store.status(INV)
    assert status is not None and status.phase == InvocationPhase.COMPLETED
    assert status.result == Success(value=b'"Hello Alice"')
    assert status.completed_at_ms == 1100
    assert status.deployment_id == "dp_1"
    [result] = [a for a in actions if isinstance(a, SendResult)]
    assert result.result.result == Success(value=b'"Hello Alice"')
    # It is forgotten after the journal retention (Restate's default: a day).
    [expiry] = [a.timer for a in actions if isinstance(a, ScheduleTimer)]
    assert (expiry.completion_id, expiry.wake_up_at_ms) == (retention.STATUS_EXPIRY, 1100 + 24 * 3600 * 1000)
    assert journal_types(sm) == [MessageType.INPUT_COMMAND, MessageType.OUTPUT_COMMAND]


def test_terminal_failure_completes_with_failure(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(attempt(1100, 1, [output_failure(418, "nope")], Ended()))
    assert sm.store.status(INV).result == Failure(code=418, message="nope")  # type: ignore[union-attr]
    assert any(isinstance(a, SendResult) for a in actions)


def test_send_does_not_answer_on_results(sm: Harness) -> None:
    sm.apply(invoke(reply=False))
    assert not any(isinstance(a, SendResult) for a in sm.apply(attempt(1100, 1, [output(b"1")], Ended())))
    assert sm.store.status(INV).phase == InvocationPhase.COMPLETED  # type: ignore[union-attr]


def test_run_proposal_becomes_notification_and_resumes_at_once(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(
        attempt(1100, 1, [run(1), propose(1, b"6")], Suspended(waiting_completions=[1], waiting_signals=[1]))
    )
    assert actions == [InvokeAttempt(INV, attempt=2)]
    assert journal_types(sm) == [
        MessageType.INPUT_COMMAND,
        MessageType.RUN_COMMAND,
        MessageType.RUN_COMPLETION_NOTIFICATION,
    ]
    note = decode_message(Frame.parse(sm.store.journal(INV)[2].frame))
    assert note.completion_id == 1 and note.value.content == b"6"
    status = sm.store.status(INV)
    assert status is not None and status.phase == InvocationPhase.INVOKED
    assert status.commands_count == 2 and status.journal_length == 3
    actions = sm.apply(attempt(1200, 2, [output(b"6")], Ended()))
    assert sm.store.status(INV).result == Success(value=b"6")  # type: ignore[union-attr]


def test_suspension_on_missing_notification_suspends(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(attempt(1100, 1, [run(1)], Suspended(waiting_completions=[1], waiting_signals=[1])))
    assert actions == []
    status = sm.store.status(INV)
    assert status is not None and status.phase == InvocationPhase.SUSPENDED
    assert status.waiting == Suspended(waiting_completions=[1], waiting_signals=[1])


@pytest.mark.parametrize(
    ("failures", "expected_delays"),
    [(1, [500]), (2, [500, 1000]), (4, [500, 1000, 2000, 4000])],
)
def test_failed_attempts_back_off_exponentially(
    sm: Harness, failures: int, expected_delays: list[int]
) -> None:
    sm.apply(invoke(ts=1000))
    delays = []
    for n in range(1, failures + 1):
        ts = 10_000 * n
        actions = sm.apply(attempt(ts, n, [], AttemptFailed(code=500, message="boom")))
        assert len(actions) == 1 and isinstance(actions[0], InvokeAttempt)
        assert actions[0].attempt == n + 1
        delays.append(actions[0].not_before_ms - ts)
    assert delays == expected_delays
    status = sm.store.status(INV)
    assert status is not None and status.retry_count == failures
    assert status.last_failure == AttemptFailed(code=500, message="boom")


def test_next_retry_delay_from_the_sdk_wins(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(attempt(5000, 1, [], AttemptFailed(code=500, message="x", next_retry_delay_ms=100)))
    assert actions == [InvokeAttempt(INV, attempt=2, not_before_ms=5100)]


def test_retry_count_since_last_stored_entry_drives_ctx_run_retries(sm: Harness) -> None:
    """The SDK decides ctx.run retries from this counter: new entries reset it, failures add one."""
    sm.apply(invoke())
    sm.apply(attempt(2000, 1, [run(1)], AttemptFailed(code=500, message="run failed")))
    assert sm.store.status(INV).retry_count_since_last_stored_entry == 1  # type: ignore[union-attr]
    sm.apply(attempt(3000, 2, [], AttemptFailed(code=500, message="run failed")))
    assert sm.store.status(INV).retry_count_since_last_stored_entry == 2  # type: ignore[union-attr]
    sm.apply(attempt(4000, 3, [propose(1, b"1")], Suspended(waiting_completions=[1])))
    assert sm.store.status(INV).retry_count_since_last_stored_entry == 0  # type: ignore[union-attr]


def test_attempts_exhausted_pause_the_invocation(sm: Harness) -> None:
    sm.apply(invoke())
    for n in range(1, 71):
        actions = sm.apply(attempt(n * 1000, n, [], AttemptFailed(code=500, message="boom")))
    assert actions == []
    assert sm.store.status(INV).phase == InvocationPhase.PAUSED  # type: ignore[union-attr]


def test_stale_and_redelivered_effects_change_nothing(sm: Harness) -> None:
    sm.apply(invoke())
    sm.apply(attempt(1100, 1, [run(1), propose(1, b"6")], Suspended(waiting_completions=[1])))
    before = len(sm.writes)
    # The same effect again (redelivered), and an effect of attempt 1 arriving after attempt 2 began.
    assert sm.apply(attempt(1100, 1, [run(1), propose(1, b"6")], Suspended(waiting_completions=[1]))) == []
    assert len(sm.writes) == before
    sm.apply(attempt(1300, 2, [output(b"6")], Ended()))
    after = len(sm.writes)
    assert sm.apply(attempt(1400, 2, [output(b"7")], Ended())) == []
    assert len(sm.writes) == after
    assert sm.store.status(INV).result == Success(value=b"6")  # type: ignore[union-attr]


def test_duplicate_invoke_returns_the_stored_result_without_running_again(sm: Harness) -> None:
    sm.apply(invoke(), attempt(1100, 1, [output(b'"Hello Alice"')], Ended()))
    before = len(sm.writes)
    actions = sm.apply(invoke(ts=9000, argument=b'"Mallory"'))
    assert len(actions) == 1 and isinstance(actions[0], SendResult)
    assert actions[0].result.result == Success(value=b'"Hello Alice"')
    assert len(sm.writes) == before


def test_unsupported_command_fails_the_attempt_with_a_readable_message(sm: Harness) -> None:
    sm.apply(invoke())
    actions = sm.apply(attempt(2000, 1, [attach_invocation(1)], Suspended(waiting_completions=[1])))
    status = sm.store.status(INV)
    assert status is not None and status.last_failure is not None
    assert status.last_failure.code == 573
    assert "ATTACH_INVOCATION_COMMAND" in status.last_failure.message
    assert isinstance(actions[0], InvokeAttempt) and actions[0].attempt == 2


def test_garbage_frame_from_a_deployment_is_a_protocol_violation(sm: Harness) -> None:
    sm.apply(invoke())
    sm.apply(attempt(2000, 1, [run(1), b"\x04\x11\x00\x00\x00\x00\x00\x09abc"], Ended()))
    status = sm.store.status(INV)
    assert status is not None and status.phase == InvocationPhase.INVOKED
    assert status.last_failure is not None and status.last_failure.code == 571
    assert journal_types(sm) == [MessageType.INPUT_COMMAND, MessageType.RUN_COMMAND]


def test_replaying_the_log_reproduces_the_changelog_and_restore_rebuilds_the_store(sm: Harness) -> None:
    log = [
        invoke(ts=1000),
        attempt(1100, 1, [run(1), propose(1, b"6")], Suspended(waiting_completions=[1])),
        attempt(1200, 2, [], AttemptFailed(code=500, message="flaky")),
        attempt(1900, 3, [output(b"6")], Ended()),
    ]
    sm.apply(*log)
    replay = Harness()
    replay.apply(*log)
    assert replay.writes == sm.writes
    restored = PartitionStore(0)
    for key, value in sm.writes:
        restored.restore(key, value)
    assert list(restored.statuses()) == list(sm.store.statuses())
    assert restored.journals() == sm.store.journals()


def test_recovery_restarts_running_invocations_only(sm: Harness) -> None:
    from tests.unit.state_machine.conftest import INV as first

    other = "inv_1" + "0" * 10 + "1" + "0" * 21 + "1"
    sm.apply(invoke(inv=first), invoke(inv=other))
    sm.apply(attempt(1100, 1, [output(b"1")], Ended(), inv=other))
    sm.apply(attempt(1200, 1, [], AttemptFailed(code=500, message="x")))
    actions = state_machine.recovery_actions(sm.store)
    assert actions == [InvokeAttempt(first, attempt=2, not_before_ms=1700)]


def test_a_barrier_changes_nothing(sm: Harness) -> None:
    from schemas.records import Barrier, Command

    sm.apply(invoke())
    before = (len(sm.writes), list(sm.store.statuses()))
    assert sm.apply(Command(timestamp_ms=5000, body=Barrier(owner="processor-0", nonce="n"))) == []
    assert (len(sm.writes), list(sm.store.statuses())) == before


def test_idempotent_send_is_acknowledged_and_a_repeat_is_previously_accepted(sm: Harness) -> None:
    from processor.state_machine import SendAccepted

    first = invoke(reply=False)
    first.body.ack_to_results = True
    first.body.idempotency_key = "idem-1"
    actions = sm.apply(first)
    assert [a.accepted.previously_accepted for a in actions if isinstance(a, SendAccepted)] == [False]
    again = sm.apply(first)
    assert [a.accepted.previously_accepted for a in again if isinstance(a, SendAccepted)] == [True]
    assert not any(isinstance(a, InvokeAttempt) for a in again)


def test_a_repeated_idempotent_call_gets_the_stored_result_and_its_expiry(sm: Harness) -> None:
    call = invoke(ts=1000)
    call.body.idempotency_key = "idem-1"
    sm.apply(call, attempt(2000, 1, [output(b"1")], Ended()))
    [answer] = sm.apply(invoke(ts=5000, argument=b"100"))
    assert isinstance(answer, SendResult)
    assert answer.result.result == Success(value=b"1")
    assert answer.result.idempotency_expires_at_ms == 2000 + 24 * 3600 * 1000


def test_sleep_stores_a_timer_and_its_firing_resumes_the_invocation(sm: Harness) -> None:
    from processor.state_machine import ScheduleTimer
    from schemas.records import Command, Timer, TimerFired

    sm.apply(invoke())
    actions = sm.apply(attempt(2000, 1, [sleep(1)], Suspended(waiting_completions=[1], waiting_signals=[1])))
    timer = Timer(invocation_id=INV, completion_id=1, wake_up_at_ms=5000)
    assert actions == [ScheduleTimer(timer)]
    assert sm.store.timers() == {(INV, 1): timer}
    assert sm.store.status(INV).phase == InvocationPhase.SUSPENDED  # type: ignore[union-attr]
    fired = Command(
        timestamp_ms=5001, body=TimerFired(invocation_id=INV, completion_id=1, wake_up_at_ms=5000)
    )
    assert sm.apply(fired) == [InvokeAttempt(INV, attempt=2)]
    assert sm.store.timers() == {}
    assert journal_types(sm)[-1] == MessageType.SLEEP_COMPLETION_NOTIFICATION
    before = len(sm.writes)
    assert sm.apply(fired) == [] and len(sm.writes) == before  # fired twice: once counts
    restored = PartitionStore(0)
    for key, value in sm.writes:
        restored.restore(key, value)
    assert restored.timers() == {}


def test_get_output_answers_unknown_not_ready_done_and_attaches(sm: Harness) -> None:
    from processor.state_machine import SendAccepted
    from schemas.records import Command, GetOutput, OutputNotReady

    def ask(wait: bool, ts: int = 1500) -> list:
        return sm.apply(Command(timestamp_ms=ts, body=GetOutput(invocation_id=INV, wait=wait)))

    [unknown] = ask(wait=False)
    assert isinstance(unknown, SendResult) and unknown.result.result == Failure(code=404, message="not found")
    assert sm.store.status(INV) is None  # asking creates nothing
    sm.apply(invoke(reply=False))
    assert ask(wait=False) == [SendAccepted(OutputNotReady(invocation_id=INV))]
    assert ask(wait=True) == [] and sm.store.status(INV).reply_to_results  # type: ignore[union-attr]
    [answer] = [a for a in sm.apply(attempt(2000, 1, [output(b"1")], Ended())) if isinstance(a, SendResult)]
    assert isinstance(answer, SendResult) and answer.result.result == Success(value=b"1")
    [later] = ask(wait=False, ts=5000)
    assert isinstance(later, SendResult) and later.result.idempotency_expires_at_ms == 2000 + 24 * 3600 * 1000


def test_a_delayed_invocation_starts_from_a_durable_timer(sm: Harness) -> None:
    from processor.state_machine import ScheduleTimer
    from schemas.records import Command, Timer, TimerFired

    delayed = invoke(ts=1000)
    delayed.body.execute_at_ms = 3000
    [schedule] = sm.apply(delayed)
    assert schedule == ScheduleTimer(Timer(invocation_id=INV, completion_id=0, wake_up_at_ms=3000))
    assert sm.store.status(INV).phase == InvocationPhase.SCHEDULED  # type: ignore[union-attr]
    assert state_machine.recovery_actions(sm.store) == []  # the timer, not recovery, starts it
    fired = Command(
        timestamp_ms=3001, body=TimerFired(invocation_id=INV, completion_id=0, wake_up_at_ms=3000)
    )
    assert sm.apply(fired) == [InvokeAttempt(INV, attempt=1)]
    assert sm.store.status(INV).phase == InvocationPhase.INVOKED  # type: ignore[union-attr]
    assert sm.store.timers() == {}
