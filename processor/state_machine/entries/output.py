"""OutputCommand: the handler's result; it completes the invocation when the End follows."""

from __future__ import annotations

from processor.state_machine.context import StepContext
from schemas.records import InvocationStatus
from schemas.service_protocol import Frame


def apply(ctx: StepContext, status: InvocationStatus, frame: Frame, message: object) -> None:
    ctx.append_entry(status, frame.encode(), is_command=True)
