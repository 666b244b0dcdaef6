"""The exclusive lock of a virtual object and its inbox.

At most one exclusive invocation runs per (service, key); the others wait, in arrival order, in
the object's inbox. The lock is held for the whole invocation (also while suspended or paused)
and handed to the head of the inbox when the holder completes. Admin state edits queue in the
same line (`patch_state`).

Each inbox entry has a sequence number that stays with it (sys_inbox's `sequence_number`); a
queued state edit takes one too, as in Restate, whose inbox counter numbers both kinds of
`InboxEntry` (the counter is the partition's there, the object's here).
"""

from __future__ import annotations

from processor.state_machine.actions import InvokeAttempt
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import patch_state
from schemas.records import HandlerType, InvocationPhase, InvocationStatus, ObjectStatus, ServiceType


def needs_lock(status: InvocationStatus) -> bool:
    target = status.target
    return (
        target.service_ty == ServiceType.VIRTUAL_OBJECT
        and target.key is not None
        and target.handler_ty in (HandlerType.EXCLUSIVE, None)
    )


def acquire_or_enqueue(ctx: StepContext, status: InvocationStatus) -> bool:
    """True if `status` now holds the lock; otherwise it was put in the inbox."""
    assert status.target.key is not None
    obj = ctx.txn.store.object(status.target.service, status.target.key)
    if obj.locked_by is None:
        obj.locked_by = status.invocation_id
        ctx.txn.put_object(obj)
        return True
    _aligned(obj)
    obj.inbox.append(status.invocation_id)
    obj.inbox_sequence_numbers.append(take_sequence_number(obj))
    ctx.txn.put_object(obj)
    status.phase = InvocationPhase.INBOXED
    return False


def take_sequence_number(obj: ObjectStatus) -> int:
    """The next inbox sequence number (an inbox entry or a queued state edit)."""
    number = obj.next_inbox_sequence_number
    obj.next_inbox_sequence_number += 1
    return number


def leave_inbox(obj: ObjectStatus, position: int) -> str:
    """Take the inbox entry at `position` out (with its sequence number); state edits queued
    behind it move up."""
    _aligned(obj)
    invocation_id = obj.inbox.pop(position)
    del obj.inbox_sequence_numbers[position]
    patch_state.left_inbox(obj, position)
    return invocation_id


def _aligned(obj: ObjectStatus) -> None:
    """Records written before inboxes had sequence numbers: number the entries by position."""
    if len(obj.inbox_sequence_numbers) != len(obj.inbox):
        obj.inbox_sequence_numbers = list(range(len(obj.inbox)))
        obj.next_inbox_sequence_number = max(obj.next_inbox_sequence_number, len(obj.inbox))


def release(ctx: StepContext, status: InvocationStatus) -> None:
    """Hand the lock to the next invocation in the inbox, and start it."""
    if not needs_lock(status):
        return
    assert status.target.key is not None
    obj = ctx.txn.store.object(status.target.service, status.target.key)
    if obj.locked_by != status.invocation_id:
        return
    obj.locked_by = None
    patch_state.apply_due(ctx, obj)
    while obj.inbox and obj.locked_by is None:
        next_id = leave_inbox(obj, 0)
        waiting = ctx.status(next_id)
        if waiting is None or waiting.phase != InvocationPhase.INBOXED:
            patch_state.apply_due(ctx, obj)
            continue
        obj.locked_by = next_id
        waiting.phase = InvocationPhase.INVOKED
        waiting.modified_at_ms = ctx.now_ms
        ctx.txn.put_status(waiting)
        ctx.emit(InvokeAttempt(next_id, attempt=waiting.attempt))
    ctx.txn.put_object(obj)
