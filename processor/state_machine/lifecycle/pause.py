"""Pause (`PATCH /invocations/{id}/pause`): an invoked invocation (running or backing off)
stops running attempts until it is resumed.

As Restate's manual pause: a running attempt is aborted, and the attempt number moves on so
anything the aborted attempt still reports is stale. It keeps its object's lock while paused.
A suspended invocation is left as it is with Restate's "already paused" (200): Restate 1.7.12,
without vqueues, answers `AlreadyPaused` for it (`rpc/pause_invocation.rs`; measured: 200, still
suspended). Scheduled, inboxed or completed invocations are not running: a 409.

One backing off keeps its retry count, its (now cancelled) retry time and its last failure: in
Restate the invoker drops the retry timer but keeps its status report (`handle_pause_invocation`
does not end it), so `sys_invocation` still shows them while paused and the count goes on after
a resume. Any other pause ends the report (the attempt ends): nothing shown, counting restarts.
"""

from __future__ import annotations

from processor.state_machine.actions import AbortAttempt
from processor.state_machine.context import StepContext
from schemas.records import InvocationPhase, InvocationStatus, OperationOutcome


def apply(ctx: StepContext, status: InvocationStatus) -> OperationOutcome:
    if status.phase in (InvocationPhase.PAUSED, InvocationPhase.SUSPENDED):
        return OperationOutcome.ALREADY_PAUSED
    if status.phase != InvocationPhase.INVOKED:
        return OperationOutcome.NOT_RUNNING
    ctx.emit(AbortAttempt(status.invocation_id, status.attempt))
    status.attempt += 1
    if not backing_off(ctx, status):
        status.next_retry_at_ms = None
    status.phase = InvocationPhase.PAUSED
    status.modified_at_ms = ctx.now_ms
    ctx.txn.put_status(status)
    return OperationOutcome.ACCEPTED


def backing_off(ctx: StepContext, status: InvocationStatus) -> bool:
    """Waiting for a retry that is not due yet (no attempt running)."""
    due = status.next_retry_at_ms
    return status.phase == InvocationPhase.INVOKED and due is not None and due > ctx.now_ms


def keeps_report(status: InvocationStatus) -> bool:
    """Paused while backing off: the invoker's status report (retry count, retry time, last
    failure) outlives the pause, as in Restate."""
    return status.phase == InvocationPhase.PAUSED and status.next_retry_at_ms is not None


def new_retry_loop(status: InvocationStatus) -> None:
    """A paused or suspended invocation is about to run again (resume, or a cancel of a paused
    one): a new invocation task in Restate's invoker, so a new retry loop; the retry count goes
    on only where the invoker kept its status report."""
    if not keeps_report(status):
        status.retry_count = 0
    status.retry_attempts = 0
    status.next_retry_at_ms = None
