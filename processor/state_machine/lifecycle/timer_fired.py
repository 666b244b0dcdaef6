"""TimerFired: a sleep is over; its SleepCompletion notification wakes the invocation."""

from __future__ import annotations

from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import invoke, retention
from processor.state_machine.lifecycle.notify import NotificationId, deliverable, notify
from schemas.records import InvocationPhase, TimerFired
from schemas.service_protocol import MessageType, notification


def apply(ctx: StepContext, cmd: TimerFired) -> None:
    timer = ctx.txn.store.timer(cmd.wake_up_at_ms, cmd.invocation_id, cmd.completion_id)
    if timer is None:
        return  # fired before (a redelivery), or the invocation is gone
    ctx.txn.delete_timer(timer)
    if cmd.completion_id in (retention.JOURNAL_EXPIRY, retention.STATUS_EXPIRY):
        expired = ctx.status(cmd.invocation_id)
        if expired is not None and expired.phase == InvocationPhase.COMPLETED:
            retention.expired(ctx, expired, cmd.completion_id)
        return
    if cmd.completion_id == invoke.START_TIMER:
        scheduled = ctx.status(cmd.invocation_id)
        if scheduled is not None and scheduled.phase == InvocationPhase.SCHEDULED:
            invoke.start(ctx, scheduled)
            ctx.txn.put_status(scheduled)
        return
    ident: NotificationId = ("completion", cmd.completion_id)
    status = deliverable(ctx, cmd.invocation_id, ident)
    if status is None:
        return
    notify(
        ctx,
        status,
        notification(MessageType.SLEEP_COMPLETION_NOTIFICATION, completion_id=cmd.completion_id),
        ident,
    )
    ctx.txn.put_status(status)
