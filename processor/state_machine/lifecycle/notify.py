"""Delivering a notification (a completion or a signal) to an invocation: append it to the
journal once, and resume the invocation if it is suspended waiting for exactly this (or paused
and this is a cancel)."""

from __future__ import annotations

from processor.state_machine import journal
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import pause, suspend
from schemas.records import InvocationPhase, InvocationStatus

NotificationId = tuple[str, int | str]  # ("completion" | "signal" | "named", id)
CANCEL: NotificationId = ("signal", 1)  # the built-in cancel signal


def deliverable(ctx: StepContext, invocation_id: str, ident: NotificationId) -> InvocationStatus | None:
    """The invocation to notify, or None if it is gone, done, or already has this notification."""
    status = ctx.status(invocation_id)
    if status is None or status.phase == InvocationPhase.COMPLETED:
        return None
    if ident in journal.notification_ids(ctx.journal(invocation_id)):
        return None  # delivered twice: the first one counts
    return status


def notify(ctx: StepContext, status: InvocationStatus, frame: bytes, ident: NotificationId) -> None:
    """Append `frame` and wake the invocation if it waits for `ident` (the caller stores the status)."""
    ctx.append_entry(status, frame, is_command=False)
    status.modified_at_ms = ctx.now_ms
    if status.phase == InvocationPhase.PAUSED:
        # As Restate: a paused invocation runs again only when resumed, or to handle a cancel.
        if ident == CANCEL:
            pause.new_retry_loop(status)
            suspend.resume(ctx, status)
        return
    waiting = status.waiting
    if status.phase != InvocationPhase.SUSPENDED or waiting is None:
        return
    kind, value = ident
    awaited: list[int] | list[str] = (
        waiting.waiting_completions
        if kind == "completion"
        else waiting.waiting_signals
        if kind == "signal"
        else waiting.waiting_named_signals
    )
    if value in awaited:
        suspend.resume(ctx, status)
