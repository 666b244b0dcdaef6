"""Resume (`PATCH /invocations/{id}/resume[?deployment=]`): a paused or suspended invocation
runs a new attempt at once; one backing off retries now.

Optionally on another deployment (resolved by the admin API, which has the registry): only for
a paused or suspended invocation that has a pinned deployment whose protocol version the new
one supports, as in Restate (`resolve_pinned_deployment`); "latest" with nothing pinned yet
changes nothing.

Counting as Restate's invoker: the resumed attempt is a new invocation task with a new retry
loop (`retry_attempts` from 0, so the retry policy's max attempts count from the resume), but
`retry_count` (sys_invocation) goes on where it was when the invocation was paused while backing
off, because the invoker kept that status report (`pause.keeps_report`); otherwise it starts
again. A backing-off invocation resumed without a pause keeps its retry loop (Restate's
`RetryNow`).
"""

from __future__ import annotations

from processor.state_machine.actions import InvokeAttempt
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import deployment_patch, pause
from schemas.records import InvocationPhase, InvocationStatus, OperateInvocation, OperationOutcome


def apply(ctx: StepContext, status: InvocationStatus, cmd: OperateInvocation) -> OperationOutcome:
    if status.phase in (InvocationPhase.SCHEDULED, InvocationPhase.INBOXED):
        return OperationOutcome.NOT_STARTED
    if status.phase == InvocationPhase.COMPLETED:
        return OperationOutcome.COMPLETED
    if status.phase == InvocationPhase.INVOKED:
        if deployment_patch.requested(cmd):
            return OperationOutcome.CANNOT_CHANGE_DEPLOYMENT
        _retry_now(ctx, status)
        return OperationOutcome.DONE
    chosen = deployment_patch.resolve(status, cmd)
    if isinstance(chosen, OperationOutcome):
        return chosen
    if chosen is not None:
        status.deployment_id = chosen
    pause.new_retry_loop(status)
    status.phase = InvocationPhase.INVOKED
    status.waiting = None
    status.attempt += 1
    status.modified_at_ms = ctx.now_ms
    ctx.emit(InvokeAttempt(status.invocation_id, attempt=status.attempt))
    ctx.txn.put_status(status)
    return OperationOutcome.DONE


def _retry_now(ctx: StepContext, status: InvocationStatus) -> None:
    """Backing off: the next attempt starts now instead of at its retry time (a running attempt
    is left alone)."""
    if status.next_retry_at_ms is None or status.next_retry_at_ms <= ctx.now_ms:
        return
    status.next_retry_at_ms = ctx.now_ms
    status.attempt += 1
    status.modified_at_ms = ctx.now_ms
    ctx.emit(InvokeAttempt(status.invocation_id, attempt=status.attempt))
    ctx.txn.put_status(status)
