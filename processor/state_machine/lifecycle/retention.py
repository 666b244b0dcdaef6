"""Retention: a completed invocation is kept for as long as its options say, then forgotten.

Its journal is kept `journal_retention` (capped by the completion retention of a keyed
invocation, as in Restate); its status (result, idempotency entry, workflow completion)
`completion_retention` for idempotent invocations and workflows, and at least as long as its
journal. Each expiry is a durable timer in the changelog, so cleanup happens on the
partition's owner in log order (a TimerFired command) and replay does the same; the compacted
changelog then drops the tombstoned keys, so a partition's state stays bounded under load.
A completed workflow's state and promises go with it: the workflow can then run again.
"""

from __future__ import annotations

from processor.state_machine.actions import ScheduleTimer
from processor.state_machine.context import StepContext
from schemas.records import HandlerType, InvocationStatus, Timer

# Restate's defaults, for invocations created without options (e.g. produced directly).
DEFAULT_JOURNAL_RETENTION_MS = 24 * 3600 * 1000
DEFAULT_COMPLETION_RETENTION_MS = 24 * 3600 * 1000
# Completion ids of the cleanup timers: above any id an SDK uses (they count from 1).
JOURNAL_EXPIRY = 2**31 - 2
STATUS_EXPIRY = 2**31 - 1


def _keyed(status: InvocationStatus) -> bool:
    return status.idempotency_key is not None or status.target.handler_ty == HandlerType.WORKFLOW


def journal_retention_ms(status: InvocationStatus) -> int:
    """As Restate: for an idempotency key or a workflow key, the completion retention caps the
    journal retention, so the key is free again when its retention ends (not a day later)."""
    value = status.options.journal_retention_ms if status.options else None
    journal = DEFAULT_JOURNAL_RETENTION_MS if value is None else value
    return min(journal, completion_retention_ms(status)) if _keyed(status) else journal


def completion_retention_ms(status: InvocationStatus) -> int:
    """How long the completion itself counts: for an idempotency key or a workflow key."""
    if not _keyed(status):
        return 0
    value = status.options.completion_retention_ms if status.options else None
    return DEFAULT_COMPLETION_RETENTION_MS if value is None else value


def schedule(ctx: StepContext, status: InvocationStatus) -> None:
    """At completion: the timers that will forget it (due at once with zero retention: the
    completing step itself still stores the final status, which callers and waiters were sent)."""
    completed = status.completed_at_ms or ctx.now_ms
    journal_until = completed + journal_retention_ms(status)
    status_until = max(completed + completion_retention_ms(status), journal_until)
    if journal_until < status_until:
        _timer(ctx, status, JOURNAL_EXPIRY, journal_until)
    _timer(ctx, status, STATUS_EXPIRY, status_until)


def _timer(ctx: StepContext, status: InvocationStatus, completion_id: int, at_ms: int) -> None:
    timer = Timer(invocation_id=status.invocation_id, completion_id=completion_id, wake_up_at_ms=at_ms)
    ctx.txn.put_timer(timer)
    ctx.emit(ScheduleTimer(timer))


def expired(ctx: StepContext, status: InvocationStatus, completion_id: int) -> None:
    if completion_id == JOURNAL_EXPIRY:
        purge_journal(ctx, status)
        ctx.txn.put_status(status)
    else:
        forget(ctx, status)


def purge_journal(ctx: StepContext, status: InvocationStatus) -> None:
    """Drop the journal, keep the status (its length says what there was)."""
    ctx.txn.purge_journal(status.invocation_id)
    status.modified_at_ms = ctx.now_ms


def forget(ctx: StepContext, status: InvocationStatus) -> None:
    """Everything about the invocation goes; a workflow's state and promises go with it."""
    ctx.txn.purge_invocation(status.invocation_id)
    if status.target.handler_ty == HandlerType.WORKFLOW and status.target.key is not None:
        ctx.txn.clear_all_state(status.target.service, status.target.key)
        ctx.txn.clear_promises(status.target.service, status.target.key)
