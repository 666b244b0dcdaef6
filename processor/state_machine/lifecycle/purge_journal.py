"""Purge journal (`PATCH /invocations/{id}/purge-journal`): a completed invocation's journal
goes, its status and output stay (attach and get-output still answer).

As Restate: the journal length and command count become 0 (nothing left to purge when its
retention expires), and only a completed invocation can be purged (409 otherwise).
"""

from __future__ import annotations

from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import retention
from schemas.records import InvocationPhase, InvocationStatus, OperationOutcome


def apply(ctx: StepContext, status: InvocationStatus) -> OperationOutcome:
    if status.phase != InvocationPhase.COMPLETED:
        return OperationOutcome.NOT_COMPLETED
    retention.purge_journal(ctx, status)
    status.journal_length = 0
    status.commands_count = 0
    ctx.txn.put_status(status)
    return OperationOutcome.DONE
