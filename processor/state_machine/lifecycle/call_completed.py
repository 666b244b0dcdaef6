"""CallCompleted: a callee finished; its result becomes a CallCompletion notification in the
caller's journal, and wakes the caller if it waits for it."""

from __future__ import annotations

from processor.state_machine.actions import ProduceCommand
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle.notify import NotificationId, deliverable, notify
from schemas.ids import InvocationId
from schemas.records import CallCompleted, CallerRef, Command, Failure, Success
from schemas.service_protocol import MessageType, notification


def apply(ctx: StepContext, cmd: CallCompleted) -> None:
    ident: NotificationId = ("completion", cmd.completion_id)
    status = deliverable(ctx, cmd.invocation_id, ident)
    if status is None:
        return
    result = cmd.result
    note = notification(
        MessageType.CALL_COMPLETION_NOTIFICATION,
        completion_id=cmd.completion_id,
        failure=(result.code, result.message) if isinstance(result, Failure) else None,
        failure_metadata=result.metadata if isinstance(result, Failure) else None,
        value=None if isinstance(result, Failure) else result.value,
    )
    notify(ctx, status, note, ident)
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
