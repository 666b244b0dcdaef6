"""Purge-journal and restart-as-new (PATCH /invocations/{id}/purge-journal|restart-as-new)."""

from __future__ import annotations

from processor.state_machine import InvokeAttempt
from schemas.ids import InvocationId
from schemas.records import (
    AttemptFailed,
    Command,
    Ended,
    InvocationOperation,
    InvocationPhase,
    InvokedByKind,
    ManageInvocation,
    ManageOperation,
    OperationOutcome,
    Success,
    Suspended,
)
from schemas.service_protocol import Frame, MessageType
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output, propose, run
from tests.unit.state_machine.test_pause_resume import answer, operate, status
from tests.unit.state_machine.test_retention import with_options

PURGE_JOURNAL, RESTART = InvocationOperation.PURGE_JOURNAL, InvocationOperation.RESTART_AS_NEW
NEW = str(InvocationId.generate(InvocationId.parse(INV).partition_key, 1_700_000_001_000, 7))


def restart(ts: int = 9000, **fields: object) -> Command:
    return operate(INV, RESTART, ts=ts, new_invocation_id=NEW, **fields)


def types(sm: Harness, inv: str) -> list[MessageType]:
    return [MessageType(Frame.parse(e.frame).type) for e in sm.store.journal(inv)]


def completed_with_a_run(sm: Harness) -> None:
    """Input, a run, its completion, the output (protocol V6, pinned to dp_1)."""
    sm.apply(invoke(), attempt(2000, 1, [run(1), propose(1, b"42")], Suspended(waiting_completions=[1])))
    sm.apply(attempt(3000, 2, [output(b'"done"')], Ended()))
    assert status(sm).phase == InvocationPhase.COMPLETED


def test_purge_journal_keeps_the_status_and_output(sm: Harness) -> None:
    sm.apply(invoke())
    assert answer(sm.apply(operate(INV, PURGE_JOURNAL))).outcome == OperationOutcome.NOT_COMPLETED
    completed_with_a_run(sm)
    assert answer(sm.apply(operate(INV, PURGE_JOURNAL))).outcome == OperationOutcome.DONE
    assert sm.store.journal(INV) == []
    done = status(sm)
    assert done.result == Success(value=b'"done"') and done.journal_length == 0 and done.commands_count == 0
    # Again: nothing left, still fine; unknown ids are 404.
    assert answer(sm.apply(operate(INV, PURGE_JOURNAL))).outcome == OperationOutcome.DONE
    other = str(InvocationId.generate(1, 1, 1))
    assert answer(sm.apply(operate(other, PURGE_JOURNAL)), other).outcome == OperationOutcome.NOT_FOUND


def test_restart_as_new_runs_the_same_input_under_the_new_id(sm: Harness) -> None:
    completed_with_a_run(sm)
    actions = sm.apply(restart())
    reply = answer(actions)
    assert reply.outcome == OperationOutcome.DONE and reply.new_invocation_id == NEW
    assert InvokeAttempt(NEW, attempt=1) in actions
    new = status(sm, NEW)
    assert new.phase == InvocationPhase.INVOKED and new.target == status(sm).target
    assert new.invoked_by.kind == InvokedByKind.RESTART_AS_NEW and new.invoked_by.invocation_id == INV
    assert new.idempotency_key is None and not new.reply_to_results
    assert sm.store.journal(NEW)[0].frame == sm.store.journal(INV)[0].frame  # the input, headers
    assert types(sm, NEW) == [MessageType.INPUT_COMMAND] and new.journal_length == 1
    assert status(sm).phase == InvocationPhase.COMPLETED  # the old one is untouched


def test_restart_from_a_prefix_copies_it_with_the_completions_of_its_commands(sm: Harness) -> None:
    completed_with_a_run(sm)
    assert types(sm, INV) == [
        MessageType.INPUT_COMMAND,
        MessageType.RUN_COMMAND,
        MessageType.RUN_COMPLETION_NOTIFICATION,
        MessageType.OUTPUT_COMMAND,
    ]
    sm.apply(restart(from_entry=1))
    assert types(sm, NEW) == types(sm, INV)[:3]
    new = status(sm, NEW)
    assert new.journal_length == 3 and new.commands_count == 2 and new.deployment_id == "dp_1"
    assert answer(sm.apply(restart(from_entry=4))).outcome == OperationOutcome.JOURNAL_COPY_RANGE_INVALID


def test_restart_from_a_prefix_with_a_command_never_completed_is_refused(sm: Harness) -> None:
    sm.apply(invoke(), attempt(2000, 1, [run(1)], Suspended(waiting_completions=[1])))
    kill = ManageInvocation(invocation_id=INV, operation=ManageOperation.KILL)
    sm.apply(Command(timestamp_ms=3000, body=kill))
    assert answer(sm.apply(restart(from_entry=1))).outcome == OperationOutcome.JOURNAL_COPY_RANGE_INVALID
    assert sm.store.status(NEW) is None


def test_restart_as_new_answers_as_restate(sm: Harness) -> None:
    assert answer(sm.apply(restart())).outcome == OperationOutcome.NOT_FOUND
    sm.apply(invoke())
    assert answer(sm.apply(restart())).outcome == OperationOutcome.STILL_RUNNING
    sm.apply(attempt(2000, 1, [output(b"1")], Ended()))
    gone = restart(deployment_id="dp_gone", latest_deployment=True)
    assert answer(sm.apply(gone)).outcome == OperationOutcome.DEPLOYMENT_NOT_FOUND
    old = restart(deployment_id="dp_0", deployment_min_protocol=1, deployment_max_protocol=4)
    assert answer(sm.apply(old)).outcome == OperationOutcome.INCOMPATIBLE_DEPLOYMENT
    sm.apply(operate(INV, PURGE_JOURNAL))
    assert answer(sm.apply(restart())).outcome == OperationOutcome.MISSING_INPUT
    assert sm.store.status(NEW) is None


def test_workflows_are_not_restarted(sm: Harness) -> None:
    from schemas.records import HandlerType
    from tests.unit.state_machine.test_workflows import RUN, invoke_wf

    sm.apply(invoke_wf(RUN, "run", HandlerType.WORKFLOW), attempt(2000, 1, [output(b"{}")], Ended(), inv=RUN))
    again = operate(RUN, RESTART, new_invocation_id=NEW)
    assert answer(sm.apply(again), RUN).outcome == OperationOutcome.UNSUPPORTED  # Restate's 422


def test_a_restarted_object_invocation_waits_for_the_lock(sm: Harness) -> None:
    from tests.unit.state_machine.test_objects import inv_id, invoke_object

    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), attempt(2000, 1, [output(b"1")], Ended(), inv=a))
    sm.apply(invoke_object(b, ts=2100))  # b holds k1's lock now
    new = str(InvocationId.generate(InvocationId.parse(a).partition_key, 1_700_000_002_000, 8))
    actions = sm.apply(operate(a, RESTART, ts=3000, new_invocation_id=new))
    assert answer(actions, a).outcome == OperationOutcome.DONE
    assert not any(isinstance(x, InvokeAttempt) for x in actions)
    assert sm.store.object("Counter", "k1").inbox == [new]
    assert status(sm, new).phase == InvocationPhase.INBOXED


def test_a_restarted_invocation_keeps_the_original_random_seed(sm: Harness) -> None:
    from processor.service import _seed_id

    completed_with_a_run(sm)
    sm.apply(restart(from_entry=1))
    new = status(sm, NEW)
    assert new.seed_invocation_id == INV and status(sm).seed_invocation_id is None
    assert _seed_id(new, InvocationId.parse(NEW)) == InvocationId.parse(INV)
    assert _seed_id(status(sm), InvocationId.parse(INV)) == InvocationId.parse(INV)
    # Restarting the restarted one still seeds with the original.
    sm.apply(attempt(9500, 1, [output(b'"again"')], Ended(), inv=NEW))
    third = str(InvocationId.generate(InvocationId.parse(INV).partition_key, 1_700_000_003_000, 9))
    sm.apply(operate(NEW, RESTART, ts=9600, new_invocation_id=third))
    assert status(sm, third).seed_invocation_id == INV


def test_restart_as_new_counts_retries_from_zero(sm: Harness) -> None:
    """A new invocation: Restate's invoker has no report for its id yet, so sys_invocation's
    retry_count starts again, and so does the retry policy."""
    sm.apply(with_options(invoke(), retry_max_attempts=2, retry_on_max_attempts="Kill"))
    sm.apply(attempt(1100, 1, [], AttemptFailed(code=500, message="boom")))
    sm.apply(attempt(2000, 2, [], AttemptFailed(code=500, message="boom")))
    old = status(sm)
    assert old.phase == InvocationPhase.COMPLETED and (old.retry_count, old.retry_attempts) == (2, 2)
    assert answer(sm.apply(restart())).outcome == OperationOutcome.DONE
    new = status(sm, NEW)
    assert (new.retry_count, new.retry_attempts, new.next_retry_at_ms, new.last_failure) == (0, 0, None, None)
    assert new.options == old.options  # the same policy, counted anew
