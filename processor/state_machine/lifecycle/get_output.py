"""GetOutput: the ingress asks for an invocation's outcome (attach waits for it, output does not).

Completed invocations are kept with their result, so it is answered from the status; an unknown
id is answered with failure 404 "not found", as Restate does.
"""

from __future__ import annotations

from processor.state_machine.actions import SendAccepted, SendResult
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import retention
from schemas.records import (
    Failure,
    GetOutput,
    InvocationPhase,
    InvocationResult,
    InvocationStatus,
    OutputNotReady,
)

NOT_FOUND = Failure(code=404, message="not found")


def apply(ctx: StepContext, cmd: GetOutput) -> None:
    status = ctx.status(cmd.invocation_id)
    if status is None:
        ctx.emit(
            SendResult(
                InvocationResult(
                    invocation_id=cmd.invocation_id, result=NOT_FOUND, completed_at_ms=ctx.now_ms
                )
            )
        )
        return
    if status.phase == InvocationPhase.COMPLETED and status.result is not None:
        completed_at = status.completed_at_ms or ctx.now_ms
        ctx.emit(
            SendResult(
                InvocationResult(
                    invocation_id=status.invocation_id,
                    result=status.result,
                    completed_at_ms=completed_at,
                    idempotency_expires_at_ms=completed_at + _kept_ms(status),
                )
            )
        )
        return
    if not cmd.wait:
        ctx.emit(SendAccepted(OutputNotReady(invocation_id=status.invocation_id)))
    elif not status.reply_to_results:
        status.reply_to_results = True
        status.modified_at_ms = ctx.now_ms
        ctx.txn.put_status(status)


def _kept_ms(status: InvocationStatus) -> int:
    """How long the result stays after completion (idempotency-expires): the key's retention for
    an idempotency or workflow key, else the journal retention."""
    return retention.completion_retention_ms(status) or retention.journal_retention_ms(status)
