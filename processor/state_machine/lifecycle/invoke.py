"""Invoke: a new invocation enters the partition."""

from __future__ import annotations

from processor.state_machine import journal
from processor.state_machine.actions import InvokeAttempt, ScheduleTimer, SendAccepted, SendResult
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import call_completed, object_lock, retention
from schemas.records import (
    Failure,
    HandlerType,
    InvocationAccepted,
    InvocationPhase,
    InvocationResult,
    InvocationStatus,
    Invoke,
    Timer,
)

WORKFLOW_ALREADY_INVOKED = Failure(code=409, message="the workflow method was already invoked")
START_TIMER = 0


def apply(ctx: StepContext, cmd: Invoke) -> None:
    existing = ctx.status(cmd.invocation_id)
    if existing is not None:
        _duplicate(ctx, existing, cmd)
        return
    scheduled = cmd.execute_at_ms is not None and cmd.execute_at_ms > ctx.now_ms
    status = InvocationStatus(
        invocation_id=cmd.invocation_id,
        phase=InvocationPhase.SCHEDULED if scheduled else InvocationPhase.INVOKED,
        target=cmd.target,
        invoked_by=cmd.invoked_by,
        idempotency_key=cmd.idempotency_key,
        reply_to_results=cmd.reply_to_results,
        callers=[cmd.caller] if cmd.caller else [],
        created_at_ms=ctx.now_ms,
        execute_at_ms=cmd.execute_at_ms if scheduled else None,
        modified_at_ms=ctx.now_ms,
        attempt=1,
        options=cmd.options,
        span_context=cmd.span_context,
    )
    headers = [(h.name, h.value) for h in cmd.headers]
    ctx.append_entry(status, journal.input_command(cmd.argument, headers), is_command=True)
    if cmd.ack_to_results:
        ctx.emit(SendAccepted(InvocationAccepted(invocation_id=cmd.invocation_id, previously_accepted=False)))
    if scheduled:
        # A delayed start is a durable timer (completion id 0: SDKs number theirs from 1).
        assert cmd.execute_at_ms is not None
        timer = Timer(
            invocation_id=cmd.invocation_id, completion_id=START_TIMER, wake_up_at_ms=cmd.execute_at_ms
        )
        ctx.txn.put_timer(timer)
        ctx.emit(ScheduleTimer(timer))
        ctx.txn.put_status(status)
        return
    start(ctx, status)
    ctx.txn.put_status(status)


def start(ctx: StepContext, status: InvocationStatus) -> None:
    """Run now, or wait in the object's inbox if another exclusive invocation holds its key."""
    status.phase = InvocationPhase.INVOKED
    status.modified_at_ms = ctx.now_ms
    if not object_lock.needs_lock(status) or object_lock.acquire_or_enqueue(ctx, status):
        ctx.emit(InvokeAttempt(status.invocation_id, attempt=status.attempt))


def _duplicate(ctx: StepContext, status: InvocationStatus, cmd: Invoke) -> None:
    """The same invocation id twice (an idempotency key used again, a producer retry, a replayed
    record): never run it twice. A new waiter still gets the answer: the stored one if the
    invocation is done (with when an idempotent result expires), else the one to come.
    """
    if cmd.ack_to_results:
        ctx.emit(
            SendAccepted(InvocationAccepted(invocation_id=status.invocation_id, previously_accepted=True))
        )
    done = status.phase == InvocationPhase.COMPLETED and status.result is not None
    # A workflow's run handler runs once per key: asking again after it finished is a conflict.
    workflow_done = done and status.target.handler_ty == HandlerType.WORKFLOW
    stored = WORKFLOW_ALREADY_INVOKED if workflow_done else status.result
    if cmd.caller is not None:
        if done and stored is not None:
            ctx.emit(call_completed.completion_for(cmd.caller, status.invocation_id, stored, ctx.now_ms))
        elif cmd.caller not in status.callers:
            status.callers.append(cmd.caller)
            ctx.txn.put_status(status)
    if not cmd.reply_to_results:
        return
    if done and stored is not None:
        completed_at = status.completed_at_ms or ctx.now_ms
        expires = (
            completed_at + retention.completion_retention_ms(status)
            if status.idempotency_key is not None
            else None
        )
        ctx.emit(
            SendResult(
                InvocationResult(
                    invocation_id=status.invocation_id,
                    result=stored,
                    completed_at_ms=completed_at,
                    idempotency_expires_at_ms=expires,
                )
            )
        )
    elif not status.reply_to_results:
        status.reply_to_results = True
        status.modified_at_ms = ctx.now_ms
        ctx.txn.put_status(status)
