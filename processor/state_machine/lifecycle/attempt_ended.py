"""AttemptEnded: the invoker reports what one attempt against the deployment produced."""

from __future__ import annotations

import structlog

from processor.state_machine import entries
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import end_invocation, fail_attempt, suspend
from schemas.records import (
    AttemptEnded,
    AttemptFailed,
    AttemptProgress,
    Ended,
    InvocationPhase,
    InvocationStatus,
    Suspended,
)

log = structlog.get_logger(__name__)

_ACTIVE = (InvocationPhase.INVOKED, InvocationPhase.SCHEDULED)


def current(ctx: StepContext, effect: AttemptEnded | AttemptProgress) -> InvocationStatus | None:
    """The invocation the effect is about, if the effect's attempt is the current one."""
    status = ctx.status(effect.invocation_id)
    if status is None or status.phase not in _ACTIVE or effect.attempt != status.attempt:
        # A stale or redelivered effect: its attempt was superseded, so it must change nothing.
        log.debug("attempt_effect.ignored", invocation_id=effect.invocation_id, attempt=effect.attempt)
        return None
    return status


def apply_new_entries(
    ctx: StepContext, status: InvocationStatus, effect: AttemptEnded | AttemptProgress
) -> AttemptFailed | None:
    """Journal what the deployment sent; the failure if one of its entries is refused (the
    entries before it stay journaled)."""
    status.phase = InvocationPhase.INVOKED
    status.deployment_id = effect.deployment_id
    status.protocol_version = effect.protocol_version
    status.last_attempt_server = effect.server
    if status.running_at_ms is None:
        status.running_at_ms = ctx.now_ms
    ctx.callees = list(effect.callees)
    for frame in effect.new_entries:
        try:
            entries.apply_new_entry(ctx, status, frame)
        except entries.EntryRejected as rejected:
            return AttemptFailed(code=rejected.code, message=str(rejected))
    status.modified_at_ms = ctx.now_ms
    return None


def apply(ctx: StepContext, effect: AttemptEnded) -> None:
    status = current(ctx, effect)
    if status is None:
        return
    ctx.ended_attempt = (effect.invocation_id, effect.attempt)  # no stream left to notify
    outcome = apply_new_entries(ctx, status, effect) or effect.outcome
    status.modified_at_ms = ctx.now_ms
    if isinstance(outcome, Ended):
        end_invocation.apply(ctx, status)
    elif isinstance(outcome, Suspended):
        suspend.apply(ctx, status, outcome)
    else:
        fail_attempt.apply(ctx, status, outcome)
    ctx.txn.put_status(status)
