"""AttemptEnded: the invoker reports what one attempt against the deployment produced."""

from __future__ import annotations

import structlog

from processor.state_machine import entries
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import end_invocation, fail_attempt, suspend
from schemas.records import AttemptEnded, AttemptFailed, Ended, InvocationPhase, Suspended

log = structlog.get_logger(__name__)

_ACTIVE = (InvocationPhase.INVOKED, InvocationPhase.SCHEDULED)


def apply(ctx: StepContext, effect: AttemptEnded) -> None:
    status = ctx.status(effect.invocation_id)
    if status is None or status.phase not in _ACTIVE or effect.attempt != status.attempt:
        # A stale or redelivered effect: its attempt was superseded, so it must change nothing.
        log.debug("attempt_ended.ignored", invocation_id=effect.invocation_id, attempt=effect.attempt)
        return
    status.phase = InvocationPhase.INVOKED
    status.deployment_id = effect.deployment_id
    status.protocol_version = effect.protocol_version
    status.last_attempt_server = effect.server
    if status.running_at_ms is None:
        status.running_at_ms = ctx.now_ms
    outcome = effect.outcome
    for frame in effect.new_entries:
        try:
            entries.apply_new_entry(ctx, status, frame)
        except entries.EntryRejected as rejected:
            # Entries before the bad one stay journaled; the attempt counts as failed.
            outcome = AttemptFailed(code=rejected.code, message=str(rejected))
            break
    status.modified_at_ms = ctx.now_ms
    if isinstance(outcome, Ended):
        end_invocation.apply(ctx, status)
    elif isinstance(outcome, Suspended):
        suspend.apply(ctx, status, outcome)
    else:
        fail_attempt.apply(ctx, status, outcome)
    ctx.txn.put_status(status)
