"""New journal entries proposed by a deployment, one module per kind of entry.

`apply_new_entry` decodes a frame and hands it to the module for its type; a frame that may not
appear here is rejected, which fails the attempt with a readable message.
"""

from __future__ import annotations

from collections.abc import Callable

from processor.state_machine.context import StepContext
from processor.state_machine.entries import (
    call,
    output,
    promise,
    propose_run_completion,
    run,
    signal,
    sleep,
    state,
)
from processor.state_machine.entries.errors import EntryRejected
from schemas.records import InvocationStatus
from schemas.service_protocol import Frame, MessageType, ProtocolViolation, decode_message, is_command

Handler = Callable[[StepContext, InvocationStatus, Frame, object], None]

_HANDLERS: dict[int, Handler] = {
    MessageType.OUTPUT_COMMAND: output.apply,
    MessageType.RUN_COMMAND: run.apply,
    MessageType.PROPOSE_RUN_COMPLETION: propose_run_completion.apply,
    MessageType.SLEEP_COMMAND: sleep.apply,
    MessageType.GET_PROMISE_COMMAND: promise.get_promise,
    MessageType.PEEK_PROMISE_COMMAND: promise.peek_promise,
    MessageType.COMPLETE_PROMISE_COMMAND: promise.complete_promise,
    MessageType.COMPLETE_AWAKEABLE_COMMAND: signal.complete_awakeable,
    MessageType.SEND_SIGNAL_COMMAND: signal.send_signal,
    MessageType.CALL_COMMAND: call.call,
    MessageType.ONE_WAY_CALL_COMMAND: call.one_way_call,
    MessageType.SET_STATE_COMMAND: state.set_state,
    MessageType.CLEAR_STATE_COMMAND: state.clear_state,
    MessageType.CLEAR_ALL_STATE_COMMAND: state.clear_all_state,
    MessageType.GET_EAGER_STATE_COMMAND: state.get_eager,
    MessageType.GET_EAGER_STATE_KEYS_COMMAND: state.get_eager,
    MessageType.GET_LAZY_STATE_COMMAND: state.get_lazy_state,
    MessageType.GET_LAZY_STATE_KEYS_COMMAND: state.get_lazy_state_keys,
}

__all__ = ["EntryRejected", "apply_new_entry"]


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
