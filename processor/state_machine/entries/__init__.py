"""New journal entries proposed by a deployment, one module per kind of entry.

`apply_new_entry` decodes a frame and hands it to the module for its type; a frame that may not
appear here is rejected, which fails the attempt with a readable message.
"""

from __future__ import annotations

from collections.abc import Callable

from processor.state_machine.context import StepContext
from processor.state_machine.entries import output, propose_run_completion, run
from schemas.records import InvocationStatus
from schemas.service_protocol import Frame, MessageType, ProtocolViolation, decode_message, is_command


class EntryRejected(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


Handler = Callable[[StepContext, InvocationStatus, Frame, object], None]

_HANDLERS: dict[int, Handler] = {
    MessageType.OUTPUT_COMMAND: output.apply,
    MessageType.RUN_COMMAND: run.apply,
    MessageType.PROPOSE_RUN_COMPLETION: propose_run_completion.apply,
}


def apply_new_entry(ctx: StepContext, status: InvocationStatus, raw: bytes) -> None:
    try:
        frame = Frame.parse(raw)
        message = decode_message(frame)
    except ProtocolViolation as e:
        raise EntryRejected(571, f"protocol violation: {e}") from e
    handler = _HANDLERS.get(frame.type)
    if handler is None:
        if is_command(frame.type):
            raise EntryRejected(573, f"kinvoke does not support {frame.name} yet")
        raise EntryRejected(
            571, f"protocol violation: {frame.name} is not something a deployment may send here"
        )
    handler(ctx, status, frame, message)
