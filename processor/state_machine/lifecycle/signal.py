"""Signal: an awakeable completed, a named signal, or cancel (signal 1) reaches an invocation
as a SignalNotification in its journal, and wakes it if it waits for that signal."""

from __future__ import annotations

from processor.state_machine import journal
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import suspend
from schemas.records import Failure, InvocationPhase, Signal, Success
from schemas.service_protocol import MessageType, notification


def apply(ctx: StepContext, cmd: Signal) -> None:
    status = ctx.status(cmd.invocation_id)
    if status is None or status.phase == InvocationPhase.COMPLETED:
        return
    ident: tuple[str, int | str] = (
        ("signal", cmd.signal_id) if cmd.signal_id is not None else ("named", cmd.signal_name or "")
    )
    if ident in journal.notification_ids(ctx.journal(status.invocation_id)):
        return  # an awakeable completes once; later completions are ignored
    result = cmd.result
    note = notification(
        MessageType.SIGNAL_NOTIFICATION,
        signal_id=cmd.signal_id,
        signal_name=cmd.signal_name if cmd.signal_id is None else None,
        value=result.value if isinstance(result, Success) else None,
        failure=(result.code, result.message) if isinstance(result, Failure) else None,
    )
    ctx.append_entry(status, note, is_command=False)
    status.modified_at_ms = ctx.now_ms
    waiting = status.waiting
    if status.phase == InvocationPhase.SUSPENDED and waiting is not None:
        awaited = (
            cmd.signal_id in waiting.waiting_signals
            if cmd.signal_id is not None
            else cmd.signal_name in waiting.waiting_named_signals
        )
        if awaited:
            suspend.resume(ctx, status)
    ctx.txn.put_status(status)
