"""TimerFired: a sleep is over; its SleepCompletion notification wakes the invocation."""

from __future__ import annotations

from processor.state_machine import journal
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import suspend
from schemas.records import InvocationPhase, TimerFired
from schemas.service_protocol import MessageType, notification


def apply(ctx: StepContext, cmd: TimerFired) -> None:
    timer = ctx.txn.store.timers.get((cmd.invocation_id, cmd.completion_id))
    if timer is None:
        return  # fired before (a redelivery), or the invocation is gone
    ctx.txn.delete_timer(timer)
    status = ctx.status(cmd.invocation_id)
    if status is None or status.phase == InvocationPhase.COMPLETED:
        return
    if ("completion", cmd.completion_id) in journal.notification_ids(ctx.journal(status.invocation_id)):
        return
    note = notification(MessageType.SLEEP_COMPLETION_NOTIFICATION, completion_id=cmd.completion_id)
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
