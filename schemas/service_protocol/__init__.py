"""Restate service protocol (V5/V6): framing and messages, shared by the invoker and the state machine."""

from schemas.service_protocol.frames import (
    REQUESTED_ACK,
    Frame,
    FrameDecoder,
    MessageType,
    ProtocolViolation,
    is_command,
    is_control,
    is_notification,
)
from schemas.service_protocol.messages import (
    decode_message,
    encode_message,
    input_command,
    message_class,
    notification,
    run_completion_notification,
)

__all__ = [
    "REQUESTED_ACK",
    "Frame",
    "FrameDecoder",
    "MessageType",
    "ProtocolViolation",
    "decode_message",
    "encode_message",
    "input_command",
    "is_command",
    "is_control",
    "is_notification",
    "message_class",
    "notification",
    "run_completion_notification",
]
