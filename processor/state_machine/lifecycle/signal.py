"""Signal: an awakeable completed, a named signal, or cancel (signal 1) reaches an invocation
as a SignalNotification in its journal, and wakes it if it waits for that signal."""

from __future__ import annotations

from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle.notify import NotificationId, deliverable, notify
from schemas.records import Failure, Signal, Success
from schemas.service_protocol import MessageType, notification


def apply(ctx: StepContext, cmd: Signal) -> None:
    ident: NotificationId = (
        ("signal", cmd.signal_id) if cmd.signal_id is not None else ("named", cmd.signal_name or "")
    )
    status = deliverable(ctx, cmd.invocation_id, ident)
    if status is None:
        return  # an awakeable completes once; later completions are ignored
    result = cmd.result
    note = notification(
        MessageType.SIGNAL_NOTIFICATION,
        signal_id=cmd.signal_id,
        signal_name=cmd.signal_name if cmd.signal_id is None else None,
        value=result.value if isinstance(result, Success) else None,
        failure=(result.code, result.message) if isinstance(result, Failure) else None,
        failure_metadata=result.metadata if isinstance(result, Failure) else None,
    )
    notify(ctx, status, note, ident)
    ctx.txn.put_status(status)
