"""OperateInvocation: pause, resume, purge-journal and restart-as-new, each answered on
`results` with an OperationAnswer (what the admin API turns into Restate's status codes)."""

from __future__ import annotations

from processor.state_machine.actions import SendAccepted
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import pause, purge_journal, restart_as_new, resume
from schemas.records import (
    InvocationOperation,
    InvocationStatus,
    OperateInvocation,
    OperationAnswer,
    OperationOutcome,
)


def apply(ctx: StepContext, cmd: OperateInvocation) -> None:
    status = ctx.status(cmd.invocation_id)
    answer = OperationAnswer(invocation_id=cmd.invocation_id, outcome=OperationOutcome.NOT_FOUND)
    if status is not None:
        answer.outcome = _run(ctx, status, cmd)
        if answer.outcome == OperationOutcome.INCOMPATIBLE_DEPLOYMENT:
            answer.pinned_protocol_version = status.protocol_version
        if cmd.operation == InvocationOperation.RESTART_AS_NEW and answer.outcome == OperationOutcome.DONE:
            answer.new_invocation_id = cmd.new_invocation_id
    ctx.emit(SendAccepted(answer))


def _run(ctx: StepContext, status: InvocationStatus, cmd: OperateInvocation) -> OperationOutcome:
    if cmd.operation == InvocationOperation.PAUSE:
        return pause.apply(ctx, status)
    if cmd.operation == InvocationOperation.RESUME:
        return resume.apply(ctx, status, cmd)
    if cmd.operation == InvocationOperation.PURGE_JOURNAL:
        return purge_journal.apply(ctx, status)
    return restart_as_new.apply(ctx, status, cmd)
