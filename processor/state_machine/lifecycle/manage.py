"""Cancel, kill and purge (admin API `PATCH /invocations/{id}/…`).

- cancel: a running, suspended or paused invocation gets signal 1 (the SDK then fails what it
  awaits with 409 "cancelled" and finishes; a paused one is resumed for it, as in Restate); one
  still waiting in an inbox or scheduled completes at once.
- kill: completes with failure 409 "killed" without running any more user code; the lock
  passes on and callers are told; the callees it still waits for are killed too (`call_tree`).
- purge: forgets a completed invocation and its journal.
"""

from __future__ import annotations

from processor.state_machine.actions import AbortAttempt, SendAccepted
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import call_tree, end_invocation, object_lock, signal
from schemas.records import (
    Failure,
    InvocationPhase,
    InvocationStatus,
    ManageAnswer,
    ManageInvocation,
    ManageOperation,
    ManageOutcome,
    Signal,
)

CANCEL_SIGNAL = 1
CANCELLED = Failure(code=409, message="cancelled")
KILLED = Failure(code=409, message="killed")


def apply(ctx: StepContext, cmd: ManageInvocation) -> None:
    status = ctx.status(cmd.invocation_id)
    outcome = _run(ctx, status, cmd.operation) if status is not None else ManageOutcome.NOT_FOUND
    ctx.emit(SendAccepted(ManageAnswer(invocation_id=cmd.invocation_id, outcome=outcome)))


def _run(ctx: StepContext, status: InvocationStatus, op: ManageOperation) -> ManageOutcome:
    completed = status.phase == InvocationPhase.COMPLETED
    if op == ManageOperation.PURGE:
        if not completed:
            return ManageOutcome.NOT_COMPLETED
        ctx.txn.purge_invocation(status.invocation_id)
        return ManageOutcome.DONE
    if completed:
        return ManageOutcome.ALREADY_COMPLETED
    running = (InvocationPhase.INVOKED, InvocationPhase.SUSPENDED, InvocationPhase.PAUSED)
    if op == ManageOperation.CANCEL and status.phase in running:
        signal.apply(ctx, Signal(invocation_id=status.invocation_id, signal_id=CANCEL_SIGNAL))
        return ManageOutcome.ACCEPTED
    _leave_inbox(ctx, status)
    if status.phase == InvocationPhase.INVOKED:
        ctx.emit(AbortAttempt(status.invocation_id, status.attempt))
    if op == ManageOperation.KILL:
        call_tree.kill_callees(ctx, status)
    end_invocation.complete(ctx, status, CANCELLED if op == ManageOperation.CANCEL else KILLED)
    ctx.txn.put_status(status)
    return ManageOutcome.DONE


def _leave_inbox(ctx: StepContext, status: InvocationStatus) -> None:
    if status.phase != InvocationPhase.INBOXED or status.target.key is None:
        return
    obj = ctx.txn.store.object(status.target.service, status.target.key)
    if status.invocation_id in obj.inbox:
        object_lock.leave_inbox(obj, obj.inbox.index(status.invocation_id))
        ctx.txn.put_object(obj)
