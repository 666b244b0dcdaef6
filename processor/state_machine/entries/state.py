"""State commands of virtual objects (and workflows).

Writes (Set/Clear/ClearAll) apply immediately, so they persist even if the handler later fails
terminally; only exclusive object handlers and the workflow `run` handler may write. Eager reads
are only journaled (the SDK had the value from the StartMessage); lazy reads get their answer
as a notification right away.
"""

from __future__ import annotations

from typing import Any

from processor.state_machine.context import StepContext
from processor.state_machine.entries.errors import EntryRejected
from schemas.records import HandlerType, InvocationStatus
from schemas.service_protocol import Frame, MessageType, notification

_WRITERS = (HandlerType.EXCLUSIVE, HandlerType.WORKFLOW, None)


def _object(status: InvocationStatus, frame: Frame, write: bool) -> tuple[str, str]:
    target = status.target
    if target.key is None:
        raise EntryRejected(571, f"{frame.name} is only allowed in virtual object and workflow handlers")
    if write and target.handler_ty not in _WRITERS:
        raise EntryRejected(571, f"{frame.name} is not allowed in a shared handler: state is read-only there")
    return target.service, target.key


def set_state(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    service, key = _object(status, frame, write=True)
    ctx.txn.set_state(service, key, message.key, message.value.content)
    ctx.append_entry(status, frame.encode(), is_command=True)


def clear_state(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    service, key = _object(status, frame, write=True)
    ctx.txn.clear_state(service, key, message.key)
    ctx.append_entry(status, frame.encode(), is_command=True)


def clear_all_state(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    service, key = _object(status, frame, write=True)
    ctx.txn.clear_all_state(service, key)
    ctx.append_entry(status, frame.encode(), is_command=True)


def get_eager(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    _object(status, frame, write=False)
    ctx.append_entry(status, frame.encode(), is_command=True)


def get_lazy_state(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    service, key = _object(status, frame, write=False)
    ctx.append_entry(status, frame.encode(), is_command=True)
    value = ctx.txn.store.state_value(service, key, message.key)
    note = notification(
        MessageType.GET_LAZY_STATE_COMPLETION_NOTIFICATION,
        completion_id=message.result_completion_id,
        value=value,
    )
    ctx.append_entry(status, note, is_command=False)


def get_lazy_state_keys(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    service, key = _object(status, frame, write=False)
    ctx.append_entry(status, frame.encode(), is_command=True)
    keys = sorted(ctx.txn.store.state_of(service, key))
    note = notification(
        MessageType.GET_LAZY_STATE_KEYS_COMPLETION_NOTIFICATION,
        completion_id=message.result_completion_id,
        state_keys=keys,
    )
    ctx.append_entry(status, note, is_command=False)
