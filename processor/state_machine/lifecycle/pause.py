"""Pause (`PATCH /invocations/{id}/pause`): an invocation that is running or suspended stops
running attempts until it is resumed.

As Restate's manual pause: a running attempt is aborted, and the attempt number moves on so
anything the aborted attempt still reports is stale; a suspended invocation forgets what it
awaited (resuming replays the journal, so the SDK works it out again). It keeps its object's
lock while paused. Scheduled, inboxed or completed invocations are not running: a 409.
"""

from __future__ import annotations

from processor.state_machine.actions import AbortAttempt
from processor.state_machine.context import StepContext
from schemas.records import InvocationPhase, InvocationStatus, OperationOutcome


def apply(ctx: StepContext, status: InvocationStatus) -> OperationOutcome:
    if status.phase == InvocationPhase.PAUSED:
        return OperationOutcome.ALREADY_PAUSED
    if status.phase not in (InvocationPhase.INVOKED, InvocationPhase.SUSPENDED):
        return OperationOutcome.NOT_RUNNING
    if status.phase == InvocationPhase.INVOKED:
        ctx.emit(AbortAttempt(status.invocation_id, status.attempt))
        status.attempt += 1
    status.phase = InvocationPhase.PAUSED
    status.waiting = None
    status.next_retry_at_ms = None
    status.modified_at_ms = ctx.now_ms
    ctx.txn.put_status(status)
    return OperationOutcome.ACCEPTED
