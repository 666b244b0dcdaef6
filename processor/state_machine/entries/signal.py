"""CompleteAwakeable and SendSignal: one invocation completes another's awakeable or signals it.
The target may live on another partition, so this becomes a Signal command there."""

from __future__ import annotations

from typing import Any

from processor.state_machine.actions import ProduceCommand
from processor.state_machine.context import StepContext
from processor.state_machine.entries.errors import EntryRejected
from schemas.ids import InvalidId, InvocationId, parse_awakeable_id
from schemas.records import Command, Failure, InvocationStatus, Signal, Success
from schemas.service_protocol import Frame


def _result(message: Any, value_field: str, failure_field: str) -> Success | Failure | None:
    which = message.WhichOneof("result")
    if which == value_field:
        return Success(value=getattr(message, value_field).content)
    if which == failure_field:
        f = getattr(message, failure_field)
        return Failure(code=f.code, message=f.message, metadata={m.key: m.value for m in f.metadata})
    return None


def complete_awakeable(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    try:
        target, signal_id = parse_awakeable_id(message.awakeable_id)
    except InvalidId as e:
        raise EntryRejected(500, str(e)) from None
    ctx.append_entry(status, frame.encode(), is_command=True)
    signal = Signal(
        invocation_id=str(target), signal_id=signal_id, result=_result(message, "value", "failure")
    )
    ctx.emit(ProduceCommand(target.partition_key, Command(timestamp_ms=ctx.now_ms, body=signal)))


def send_signal(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    try:
        target = InvocationId.parse(message.target_invocation_id)
    except InvalidId as e:
        raise EntryRejected(500, str(e)) from None
    ctx.append_entry(status, frame.encode(), is_command=True)
    which = message.WhichOneof("signal_id")
    signal = Signal(
        invocation_id=str(target),
        signal_id=message.idx if which == "idx" else None,
        signal_name=message.name if which == "name" else None,
        result=_result(message, "value", "failure"),
    )
    ctx.emit(ProduceCommand(target.partition_key, Command(timestamp_ms=ctx.now_ms, body=signal)))
