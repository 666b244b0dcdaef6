"""ProposeRunCompletion: the SDK ran a `ctx.run` body; its result becomes a RunCompletion
notification in the journal, which the next attempt replays (V6: the full notification)."""

from __future__ import annotations

from typing import Any

from processor.state_machine.context import StepContext
from schemas.records import InvocationStatus
from schemas.service_protocol import Frame, run_completion_notification


def apply(ctx: StepContext, status: InvocationStatus, frame: Frame, message: Any) -> None:
    ctx.append_entry(status, run_completion_notification(message), is_command=False)
