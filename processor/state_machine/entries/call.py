"""Call and OneWayCall: start another invocation from this one.

The callee's id is derived from the caller's id and the journal index (or from the idempotency
key / workflow key), never random, so replaying the log creates the same child. The caller gets
the child's id at once (CallInvocationId notification); a Call also gets the result later, when
the child completes (CallCompleted → CallCompletion notification).
"""

from __future__ import annotations

import hashlib
from typing import Any

from processor.state_machine.actions import ProduceCommand
from processor.state_machine.context import StepContext
from processor.state_machine.entries.errors import EntryRejected
from schemas.ids import InvocationId, partition_key_of
from schemas.records import (
    CallerRef,
    Command,
    HandlerType,
    Header,
    InvocationOptions,
    InvocationStatus,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
)
from schemas.service_protocol import Frame, MessageType, notification


def call(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    _start_child(ctx, status, frame, message, result_completion_id=message.result_completion_id)


def one_way_call(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    execute_at = message.invoke_time if message.invoke_time > ctx.now_ms else None
    _start_child(ctx, status, frame, message, result_completion_id=None, execute_at_ms=execute_at)


def _callee(
    ctx: StepContext, message: Any
) -> tuple[ServiceType, HandlerType | None, InvocationOptions | None]:
    callee = ctx.next_callee()
    if callee is None or callee.service_ty is None:
        reason = callee.error if callee is not None and callee.error else "the call target was not resolved"
        raise EntryRejected(500, f"cannot call {message.service_name}/{message.handler_name}: {reason}")
    return callee.service_ty, callee.handler_ty, callee.options


def child_id(
    parent: InvocationId, index: int, target: InvocationTarget, idempotency_key: str | None
) -> InvocationId:
    if idempotency_key:
        return InvocationId.for_idempotent_request(
            target.service, target.key, target.handler, idempotency_key
        )
    if target.service_ty == ServiceType.WORKFLOW and target.handler_ty == HandlerType.WORKFLOW:
        assert target.key is not None
        return InvocationId.for_workflow(target.service, target.key)
    if target.key is not None:
        pk = partition_key_of(target.key)
    else:
        digest = hashlib.sha256(parent.to_bytes() + index.to_bytes(4, "big") + b"pk").digest()
        pk = int.from_bytes(digest[:8], "big")
    return InvocationId.child(parent, index, pk)


def _start_child(
    ctx: StepContext,
    status: InvocationStatus,
    frame: Frame,
    message: Any,
    *,
    result_completion_id: int | None,
    execute_at_ms: int | None = None,
) -> None:
    service_ty, handler_ty, options = _callee(ctx, message)
    keyed = service_ty != ServiceType.SERVICE
    if keyed and not message.key:
        raise EntryRejected(500, f"calling {message.service_name}/{message.handler_name} needs an object key")
    target = InvocationTarget(
        service=message.service_name,
        handler=message.handler_name,
        key=message.key if keyed else None,
        service_ty=service_ty,
        handler_ty=handler_ty,
    )
    index = status.journal_length
    ctx.append_entry(status, frame.encode(), is_command=True)
    idempotency_key = message.idempotency_key if message.HasField("idempotency_key") else None
    child = child_id(InvocationId.parse(status.invocation_id), index, target, idempotency_key)
    note = notification(
        MessageType.CALL_INVOCATION_ID_COMPLETION_NOTIFICATION,
        completion_id=message.invocation_id_notification_idx,
        invocation_id=str(child),
    )
    ctx.append_entry(status, note, is_command=False)
    invoke = Invoke(
        invocation_id=str(child),
        target=target,
        argument=message.parameter,
        headers=[Header(name=h.key, value=h.value) for h in message.headers],
        idempotency_key=idempotency_key,
        invoked_by=InvokedBy(
            kind=InvokedByKind.SERVICE, invocation_id=status.invocation_id, target=str(status.target)
        ),
        caller=(
            CallerRef(invocation_id=status.invocation_id, completion_id=result_completion_id)
            if result_completion_id is not None
            else None
        ),
        execute_at_ms=execute_at_ms,
        options=options,
    )
    ctx.emit(ProduceCommand(child.partition_key, Command(timestamp_ms=ctx.now_ms, body=invoke)))
