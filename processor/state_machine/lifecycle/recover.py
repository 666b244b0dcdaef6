"""Recovery: a new owner of a partition restarts what the previous owner had running."""

from __future__ import annotations

from processor.state_machine.actions import Action, InvokeAttempt
from processor.storage import PartitionStore
from schemas.records import InvocationPhase


def actions(store: PartitionStore) -> list[Action]:
    out: list[Action] = []
    for invocation_id in store.invoked():  # scheduled ones start from their timer
        status = store.status(invocation_id)
        if status is not None and status.phase == InvocationPhase.INVOKED:
            not_before = status.next_retry_at_ms or 0
            out.append(InvokeAttempt(status.invocation_id, attempt=status.attempt, not_before_ms=not_before))
    return out
