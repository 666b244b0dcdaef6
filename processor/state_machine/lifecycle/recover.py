"""Recovery: a new owner of a partition restarts what the previous owner had running."""

from __future__ import annotations

from processor.state_machine.actions import Action, InvokeAttempt
from processor.storage import PartitionStore
from schemas.records import InvocationPhase


def actions(store: PartitionStore) -> list[Action]:
    out: list[Action] = []
    for status in store.statuses.values():
        if status.phase == InvocationPhase.INVOKED:  # scheduled ones start from their timer
            not_before = status.next_retry_at_ms or 0
            out.append(InvokeAttempt(status.invocation_id, attempt=status.attempt, not_before_ms=not_before))
    return out
