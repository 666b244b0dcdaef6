"""The exclusive lock of a virtual object and its inbox.

At most one exclusive invocation runs per (service, key); the others wait, in arrival order, in
the object's inbox. The lock is held for the whole invocation (also while suspended or paused)
and handed to the head of the inbox when the holder completes. Admin state edits queue in the
same line (`patch_state`).
"""

from __future__ import annotations

from processor.state_machine.actions import InvokeAttempt
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import patch_state
from schemas.records import HandlerType, InvocationPhase, InvocationStatus, ServiceType


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
    obj.inbox.append(status.invocation_id)
    ctx.txn.put_object(obj)
    status.phase = InvocationPhase.INBOXED
    return False


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
        next_id = obj.inbox.pop(0)
        patch_state.left_inbox(obj, 0)
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
