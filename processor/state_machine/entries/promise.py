"""Durable promises of workflows: GetPromise waits for one, PeekPromise looks, CompletePromise
completes it once. All handlers of a workflow key live on one partition, so completing a
promise wakes its waiters in the same step."""

from __future__ import annotations

from typing import Any

from processor.state_machine.context import StepContext
from processor.state_machine.entries.errors import EntryRejected
from processor.state_machine.lifecycle.notify import NotificationId, deliverable, notify
from schemas.records import (
    Failure,
    InvocationStatus,
    Promise,
    PromiseWaiter,
    ServiceType,
    Success,
)
from schemas.service_protocol import Frame, MessageType, notification


def _promise(ctx: StepContext, status: InvocationStatus, frame: Frame, name: str) -> Promise:
    target = status.target
    if target.service_ty != ServiceType.WORKFLOW or target.key is None:
        raise EntryRejected(571, f"{frame.name} is only allowed in workflow handlers")
    found = ctx.txn.store.promise(target.service, target.key, name)
    return found or Promise(service=target.service, key=target.key, name=name)


def _answer(ty: int, completion_id: int, result: Success | Failure | None) -> bytes:
    return notification(
        ty,
        completion_id=completion_id,
        value=result.value if isinstance(result, Success) else None,
        failure=(result.code, result.message) if isinstance(result, Failure) else None,
        failure_metadata=result.metadata if isinstance(result, Failure) else None,
    )


def get_promise(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    promise = _promise(ctx, status, frame, message.key)
    ctx.append_entry(status, frame.encode(), is_command=True)
    if promise.result is not None:
        note = _answer(
            MessageType.GET_PROMISE_COMPLETION_NOTIFICATION, message.result_completion_id, promise.result
        )
        ctx.append_entry(status, note, is_command=False)
        return
    promise.waiters.append(
        PromiseWaiter(invocation_id=status.invocation_id, completion_id=message.result_completion_id)
    )
    ctx.txn.put_promise(promise)


def peek_promise(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    promise = _promise(ctx, status, frame, message.key)
    ctx.append_entry(status, frame.encode(), is_command=True)
    note = _answer(
        MessageType.PEEK_PROMISE_COMPLETION_NOTIFICATION, message.result_completion_id, promise.result
    )
    ctx.append_entry(status, note, is_command=False)


def complete_promise(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    promise = _promise(ctx, status, frame, message.key)
    ctx.append_entry(status, frame.encode(), is_command=True)
    done = MessageType.COMPLETE_PROMISE_COMPLETION_NOTIFICATION
    if promise.result is not None:
        failure = Failure(code=409, message="promise was already completed")
        ctx.append_entry(status, _answer(done, message.result_completion_id, failure), is_command=False)
        return
    which = message.WhichOneof("completion")
    if which == "completion_failure":
        f = message.completion_failure
        promise.result = Failure(
            code=f.code, message=f.message, metadata={m.key: m.value for m in f.metadata}
        )
    else:
        promise.result = Success(value=message.completion_value.content)
    waiters, promise.waiters = promise.waiters, []
    ctx.txn.put_promise(promise)
    ctx.append_entry(status, _answer(done, message.result_completion_id, None), is_command=False)
    for waiter in waiters:
        _wake(ctx, status, waiter, promise)


def _wake(ctx: StepContext, completer: InvocationStatus, waiter: PromiseWaiter, promise: Promise) -> None:
    note = _answer(MessageType.GET_PROMISE_COMPLETION_NOTIFICATION, waiter.completion_id, promise.result)
    ident: NotificationId = ("completion", waiter.completion_id)
    if waiter.invocation_id == completer.invocation_id:
        notify(ctx, completer, note, ident)  # its status is stored by the caller of the entry handler
        return
    target = deliverable(ctx, waiter.invocation_id, ident)
    if target is not None:
        notify(ctx, target, note, ident)
        ctx.txn.put_status(target)
