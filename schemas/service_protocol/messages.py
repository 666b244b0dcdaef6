"""Protobuf messages by type id, and the frames the runtime builds itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError, Message

from schemas.service_protocol import protocol_pb2 as pb
from schemas.service_protocol.frames import Frame, MessageType, ProtocolViolation, is_notification

_CLASSES: dict[int, type[Message]] = {
    MessageType.START: pb.StartMessage,
    MessageType.SUSPENSION: pb.SuspensionMessage,
    MessageType.ERROR: pb.ErrorMessage,
    MessageType.END: pb.EndMessage,
    MessageType.COMMAND_ACK: pb.CommandAckMessage,
    MessageType.PROPOSE_RUN_COMPLETION: pb.ProposeRunCompletionMessage,
    MessageType.INPUT_COMMAND: pb.InputCommandMessage,
    MessageType.OUTPUT_COMMAND: pb.OutputCommandMessage,
    MessageType.GET_LAZY_STATE_COMMAND: pb.GetLazyStateCommandMessage,
    MessageType.SET_STATE_COMMAND: pb.SetStateCommandMessage,
    MessageType.CLEAR_STATE_COMMAND: pb.ClearStateCommandMessage,
    MessageType.CLEAR_ALL_STATE_COMMAND: pb.ClearAllStateCommandMessage,
    MessageType.GET_LAZY_STATE_KEYS_COMMAND: pb.GetLazyStateKeysCommandMessage,
    MessageType.GET_EAGER_STATE_COMMAND: pb.GetEagerStateCommandMessage,
    MessageType.GET_EAGER_STATE_KEYS_COMMAND: pb.GetEagerStateKeysCommandMessage,
    MessageType.GET_PROMISE_COMMAND: pb.GetPromiseCommandMessage,
    MessageType.PEEK_PROMISE_COMMAND: pb.PeekPromiseCommandMessage,
    MessageType.COMPLETE_PROMISE_COMMAND: pb.CompletePromiseCommandMessage,
    MessageType.SLEEP_COMMAND: pb.SleepCommandMessage,
    MessageType.CALL_COMMAND: pb.CallCommandMessage,
    MessageType.ONE_WAY_CALL_COMMAND: pb.OneWayCallCommandMessage,
    MessageType.SEND_SIGNAL_COMMAND: pb.SendSignalCommandMessage,
    MessageType.RUN_COMMAND: pb.RunCommandMessage,
    MessageType.ATTACH_INVOCATION_COMMAND: pb.AttachInvocationCommandMessage,
    MessageType.GET_INVOCATION_OUTPUT_COMMAND: pb.GetInvocationOutputCommandMessage,
    MessageType.COMPLETE_AWAKEABLE_COMMAND: pb.CompleteAwakeableCommandMessage,
}


def message_class(ty: int) -> type[Message]:
    if ty in _CLASSES:
        return _CLASSES[ty]
    if is_notification(ty):
        return pb.NotificationMessage
    raise ProtocolViolation(f"unknown message type 0x{ty:04X}")


def decode_message(frame: Frame) -> Any:
    msg = message_class(frame.type)()
    try:
        msg.ParseFromString(frame.payload)
    except DecodeError as e:
        raise ProtocolViolation(f"undecodable {frame.name} payload: {e}") from e
    return msg


def encode_message(ty: int, msg: Message, flags: int = 0) -> bytes:
    return Frame(ty, flags, msg.SerializeToString()).encode()


def input_command(argument: bytes, headers: list[tuple[str, str]]) -> bytes:
    msg = pb.InputCommandMessage(
        headers=[pb.Header(key=k, value=v) for k, v in headers], value=pb.Value(content=argument)
    )
    return encode_message(MessageType.INPUT_COMMAND, msg)


def run_completion_notification(propose: pb.ProposeRunCompletionMessage) -> bytes:
    """ProposeRunCompletion carries raw bytes (field 14); the notification wraps them in a Value."""
    note = pb.NotificationMessage(completion_id=propose.result_completion_id)
    if propose.WhichOneof("result") == "failure":
        note.failure.CopyFrom(propose.failure)
    else:
        note.value.content = propose.value
    return encode_message(MessageType.RUN_COMPLETION_NOTIFICATION, note)


def notification(
    ty: int,
    *,
    completion_id: int | None = None,
    signal_id: int | None = None,
    signal_name: str | None = None,
    value: bytes | None = None,
    failure: tuple[int, str] | None = None,
    invocation_id: str | None = None,
    state_keys: list[bytes] | None = None,
    failure_metadata: Mapping[str, str] | None = None,
) -> bytes:
    """A notification frame of any kind; with no result given, the result is `void`. A failure's
    metadata (protocol V6) goes with it, so a caller sees what the callee's TerminalError carried."""
    note = pb.NotificationMessage()
    if completion_id is not None:
        note.completion_id = completion_id
    elif signal_id is not None:
        note.signal_id = signal_id
    elif signal_name is not None:
        note.signal_name = signal_name
    if value is not None:
        note.value.content = value
    elif failure is not None:
        note.failure.code, note.failure.message = failure
        for k, v in (failure_metadata or {}).items():
            note.failure.metadata.add(key=k, value=v)
    elif invocation_id is not None:
        note.invocation_id = invocation_id
    elif state_keys is not None:
        note.state_keys.keys.extend(state_keys)
    else:
        note.void.SetInParent()
    return encode_message(ty, note)
