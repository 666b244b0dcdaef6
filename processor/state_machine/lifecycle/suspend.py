"""Suspension: the deployment waits for notifications it has not been sent yet.

If one of them is already in the journal (e.g. the RunCompletion made from the proposal of this
very attempt), resume at once; otherwise stay suspended until one is appended.
"""

from __future__ import annotations

from processor.state_machine import journal
from processor.state_machine.actions import InvokeAttempt
from processor.state_machine.context import StepContext
from schemas.records import InvocationPhase, InvocationStatus, Suspended


def apply(ctx: StepContext, status: InvocationStatus, waiting: Suspended) -> None:
    present = journal.notification_ids(ctx.journal(status.invocation_id))
    wanted: set[tuple[str, int | str]] = {("completion", c) for c in waiting.waiting_completions}
    wanted |= {("signal", s) for s in waiting.waiting_signals}
    wanted |= {("named", n) for n in waiting.waiting_named_signals}
    # Restate's invoker ends its status report and its retry loop when an attempt suspends.
    status.retry_count = 0
    status.retry_attempts = 0
    status.last_failure = None
    status.next_retry_at_ms = None
    if wanted & present:
        resume(ctx, status)
        return
    status.phase = InvocationPhase.SUSPENDED
    status.waiting = waiting


def resume(ctx: StepContext, status: InvocationStatus) -> None:
    status.phase = InvocationPhase.INVOKED
    status.waiting = None
    status.attempt += 1
    ctx.emit(InvokeAttempt(status.invocation_id, attempt=status.attempt))
