"""End: the deployment finished the invocation; its OutputCommand is the result.

`complete` is also how an invocation ends without its handler (cancelled while waiting in an
inbox, killed): the lock passes on, callers and waiters get the result.
"""

from __future__ import annotations

from processor.state_machine import journal
from processor.state_machine.actions import SendResult
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import call_completed, object_lock, retention
from schemas.records import Failure, InvocationPhase, InvocationResult, InvocationStatus, Success


def apply(ctx: StepContext, status: InvocationStatus) -> None:
    complete(ctx, status, journal.find_output(ctx.journal(status.invocation_id)) or Success(value=b""))


def complete(ctx: StepContext, status: InvocationStatus, result: Success | Failure) -> None:
    """Mark completed and tell everyone who waits (the caller stores the status)."""
    status.phase = InvocationPhase.COMPLETED
    status.result = result
    status.completed_at_ms = ctx.now_ms
    status.modified_at_ms = ctx.now_ms
    status.waiting = None
    status.next_retry_at_ms = None
    object_lock.release(ctx, status)
    retention.schedule(ctx, status)
    for caller in status.callers:
        ctx.emit(call_completed.completion_for(caller, status.invocation_id, result, ctx.now_ms))
    if status.reply_to_results:
        ctx.emit(
            SendResult(
                InvocationResult(
                    invocation_id=status.invocation_id, result=result, completed_at_ms=ctx.now_ms
                )
            )
        )
