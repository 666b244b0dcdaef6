"""Options carried by an invocation (retry policy, retentions) and what they do."""

from __future__ import annotations

from processor.state_machine import InvokeAttempt, ScheduleTimer, SendResult
from processor.state_machine.lifecycle import retention
from schemas import changelog
from schemas.records import (
    AttemptFailed,
    Command,
    Ended,
    Failure,
    GetOutput,
    HandlerType,
    InvocationOptions,
    InvocationPhase,
    TimerFired,
)
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output
from tests.unit.state_machine.test_workflows import RUN, invoke_wf

HOUR = 3600 * 1000


def with_options(cmd: Command, **options: object) -> Command:
    cmd.body.options = InvocationOptions(**options)  # type: ignore[union-attr]
    return cmd


def fire(ts: int, timer: ScheduleTimer) -> Command:
    t = timer.timer
    return Command(
        timestamp_ms=ts,
        body=TimerFired(
            invocation_id=t.invocation_id, completion_id=t.completion_id, wake_up_at_ms=t.wake_up_at_ms
        ),
    )


def timers(actions: list) -> dict[int, ScheduleTimer]:
    return {a.timer.completion_id: a for a in actions if isinstance(a, ScheduleTimer)}


def test_an_idempotent_invocation_is_forgotten_after_its_retention_and_runs_again(sm: Harness) -> None:
    call = with_options(invoke(ts=1000), journal_retention_ms=HOUR, completion_retention_ms=5 * HOUR)
    call.body.idempotency_key = "k"  # type: ignore[union-attr]
    sm.apply(call)
    done = timers(sm.apply(attempt(2000, 1, [output(b"1")], Ended())))
    assert done[retention.JOURNAL_EXPIRY].timer.wake_up_at_ms == 2000 + HOUR
    assert done[retention.STATUS_EXPIRY].timer.wake_up_at_ms == 2000 + 5 * HOUR
    # Within the retention a repeat is answered from the stored result, with its expiry.
    [again] = sm.apply(
        with_options(invoke(ts=3000), journal_retention_ms=HOUR, completion_retention_ms=5 * HOUR)
    )
    assert isinstance(again, SendResult) and again.result.idempotency_expires_at_ms == 2000 + 5 * HOUR
    # The journal goes first, the status stays.
    sm.apply(fire(2000 + HOUR, done[retention.JOURNAL_EXPIRY]))
    status = sm.store.status(INV)
    assert status is not None and status.phase == InvocationPhase.COMPLETED and sm.store.journal(INV) == []
    sm.apply(fire(2000 + 5 * HOUR, done[retention.STATUS_EXPIRY]))
    assert sm.store.status(INV) is None
    left = [
        k for prefix in ("status/", "journal/", "timer/") for k, _ in sm.store.kv.scan(prefix) if INV in k
    ]
    assert left == []  # nothing of it is left
    # The same key again: a new invocation.
    assert InvokeAttempt(INV, attempt=1) in sm.apply(invoke(ts=2000 + 6 * HOUR))


def test_without_options_restates_defaults_apply(sm: Harness) -> None:
    sm.apply(invoke(ts=1000))
    done = timers(sm.apply(attempt(2000, 1, [output(b"1")], Ended())))
    assert list(done) == [retention.STATUS_EXPIRY]  # not idempotent: kept for the journal retention
    assert done[retention.STATUS_EXPIRY].timer.wake_up_at_ms == 2000 + retention.DEFAULT_JOURNAL_RETENTION_MS


def test_zero_retention_forgets_at_once_after_answering(sm: Harness) -> None:
    sm.apply(with_options(invoke(ts=1000), journal_retention_ms=0))
    actions = sm.apply(attempt(2000, 1, [output(b"1")], Ended()))
    assert any(isinstance(a, SendResult) for a in actions)
    sm.apply(fire(2000, timers(actions)[retention.STATUS_EXPIRY]))
    assert sm.store.status(INV) is None


def test_a_completed_workflow_takes_its_state_and_promises_with_it(sm: Harness) -> None:
    from tests.unit.state_machine.test_workflows import complete_promise

    run = with_options(
        invoke_wf(RUN, "run", HandlerType.WORKFLOW), journal_retention_ms=0, completion_retention_ms=HOUR
    )
    sm.apply(run)
    sm.apply(attempt(1100, 1, [complete_promise(b"1", 1)], Ended(), inv=RUN))
    assert sm.store.promise("Signup", "wf-1", "confirmation") is not None
    status = sm.store.status(RUN)
    assert status is not None
    expiries = {t.completion_id: t for t in sm.store.timers().values()}
    assert expiries[retention.JOURNAL_EXPIRY].wake_up_at_ms == 1100  # journal_retention 0: at once
    expiry = expiries[retention.STATUS_EXPIRY]
    assert expiry.completion_id == retention.STATUS_EXPIRY and expiry.wake_up_at_ms == 1100 + HOUR
    sm.apply(
        Command(
            timestamp_ms=1100 + HOUR,
            body=TimerFired(
                invocation_id=RUN, completion_id=expiry.completion_id, wake_up_at_ms=expiry.wake_up_at_ms
            ),
        )
    )
    assert sm.store.status(RUN) is None and sm.store.promise("Signup", "wf-1", "confirmation") is None
    assert InvokeAttempt(RUN, attempt=1) in sm.apply(invoke_wf(RUN, "run", HandlerType.WORKFLOW, ts=2 * HOUR))


def test_the_invocations_retry_policy_decides(sm: Harness) -> None:
    sm.apply(
        with_options(
            invoke(), retry_initial_interval_ms=10, retry_max_attempts=2, retry_on_max_attempts="Kill"
        )
    )
    first = sm.apply(attempt(1100, 1, [], AttemptFailed(code=500, message="boom")))
    assert first == [InvokeAttempt(INV, attempt=2, not_before_ms=1110)]
    killed = sm.apply(attempt(1200, 2, [], AttemptFailed(code=500, message="boom again")))
    status = sm.store.status(INV)
    assert status is not None and status.phase == InvocationPhase.COMPLETED
    assert status.result == Failure(code=500, message="boom again")
    assert any(isinstance(a, SendResult) for a in killed)


def test_pause_on_max_attempts_is_the_default(sm: Harness) -> None:
    sm.apply(with_options(invoke(), retry_max_attempts=1))
    assert sm.apply(attempt(1100, 1, [], AttemptFailed(code=500, message="boom"))) == []
    assert sm.store.status(INV).phase == InvocationPhase.PAUSED  # type: ignore[union-attr]


def test_changelog_keys_of_the_expiry_timers_parse() -> None:
    key = changelog.timer_key(5, INV, retention.STATUS_EXPIRY)
    assert changelog.parse_key(key).index == retention.STATUS_EXPIRY


def test_an_idempotency_keys_retention_caps_the_journal_retention(sm: Harness) -> None:
    """Restate: "the idempotency_retention caps the maximum journal_retention", so with a short
    idempotency retention and the default journal retention the key is free again on time."""
    call = with_options(invoke(ts=1000), completion_retention_ms=2000)
    call.body.idempotency_key = "k"  # type: ignore[union-attr]
    sm.apply(call)
    done = timers(sm.apply(attempt(2000, 1, [output(b"1")], Ended())))
    assert list(done) == [retention.STATUS_EXPIRY]
    assert done[retention.STATUS_EXPIRY].timer.wake_up_at_ms == 2000 + 2000
    [answer] = sm.apply(Command(timestamp_ms=3000, body=GetOutput(invocation_id=INV, wait=False)))
    assert isinstance(answer, SendResult) and answer.result.idempotency_expires_at_ms == 4000
    sm.apply(fire(4000, done[retention.STATUS_EXPIRY]))
    assert sm.store.status(INV) is None
    assert InvokeAttempt(INV, attempt=1) in sm.apply(invoke(ts=5000))
