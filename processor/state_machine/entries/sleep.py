"""SleepCommand (`ctx.sleep`): a durable timer, stored in the changelog so it survives any
restart; its firing comes back as a TimerFired command and completes the sleep."""

from __future__ import annotations

from typing import Any

from processor.state_machine.actions import ScheduleTimer
from processor.state_machine.context import StepContext
from schemas.records import InvocationStatus, Timer
from schemas.service_protocol import Frame


def apply(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    ctx.append_entry(status, frame.encode(), is_command=True)
    timer = Timer(
        invocation_id=status.invocation_id,
        completion_id=message.result_completion_id,
        wake_up_at_ms=message.wake_up_time,
    )
    ctx.txn.put_timer(timer)
    ctx.emit(ScheduleTimer(timer))
