"""AttemptProgress: an attempt that is still running (a bidirectional stream) sent entries.

They are journaled as they come, so their notifications (a RunCompletion for a proposal, a
call's invocation id, a lazy state value) can be sent back on the open stream; an entry that is
refused fails the attempt, and the next attempt supersedes the running one.
"""

from __future__ import annotations

from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import fail_attempt
from processor.state_machine.lifecycle.attempt_ended import apply_new_entries, current
from schemas.records import AttemptProgress


def apply(ctx: StepContext, effect: AttemptProgress) -> None:
    status = current(ctx, effect)
    if status is None:
        return
    refused = apply_new_entries(ctx, status, effect)
    if refused is not None:
        fail_attempt.apply(ctx, status, refused)
    ctx.txn.put_status(status)
