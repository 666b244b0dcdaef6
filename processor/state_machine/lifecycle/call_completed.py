"""CallCompleted: a callee finished; its result becomes a CallCompletion notification in the
caller's journal, and wakes the caller if it waits for it."""

from __future__ import annotations

from processor.state_machine import journal
from processor.state_machine.actions import ProduceCommand
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import suspend
from schemas.ids import InvocationId
from schemas.records import CallCompleted, CallerRef, Command, Failure, InvocationPhase, Success
from schemas.service_protocol import MessageType, notification


def apply(ctx: StepContext, cmd: CallCompleted) -> None:
    status = ctx.status(cmd.invocation_id)
    if status is None or status.phase == InvocationPhase.COMPLETED:
        return
    if ("completion", cmd.completion_id) in journal.notification_ids(ctx.journal(status.invocation_id)):
        return  # delivered twice: the first one counts
    result = cmd.result
    note = notification(
        MessageType.CALL_COMPLETION_NOTIFICATION,
        completion_id=cmd.completion_id,
        failure=(result.code, result.message) if isinstance(result, Failure) else None,
        value=None if isinstance(result, Failure) else result.value,
    )
    ctx.append_entry(status, note, is_command=False)
    status.modified_at_ms = ctx.now_ms
    waiting = status.waiting
    if (
        status.phase == InvocationPhase.SUSPENDED
        and waiting
        and cmd.completion_id in waiting.waiting_completions
    ):
        suspend.resume(ctx, status)
    ctx.txn.put_status(status)


def completion_for(
    caller: CallerRef, callee_id: str, result: Success | Failure, now_ms: int
) -> ProduceCommand:
    """The command that brings a callee's result to its caller's partition."""
    body = CallCompleted(
        invocation_id=caller.invocation_id,
        completion_id=caller.completion_id,
        callee_id=callee_id,
        result=result,
    )
    pk = InvocationId.parse(caller.invocation_id).partition_key
    return ProduceCommand(pk, Command(timestamp_ms=now_ms, body=body))
