"""Service protocol framing: an 8-byte big-endian header (type u16, flags u16, length u32)
followed by a protobuf payload."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct(">HHI")
REQUESTED_ACK = 0x8000
MAX_FRAME_LEN = 64 * 1024 * 1024  # a sanity bound, far above any payload an SDK sends


class ProtocolViolation(Exception):
    """The deployment sent bytes that are not a valid service-protocol stream."""


class MessageType(IntEnum):
    START = 0x0000
    SUSPENSION = 0x0001
    ERROR = 0x0002
    END = 0x0003
    COMMAND_ACK = 0x0004
    PROPOSE_RUN_COMPLETION = 0x0005
    AWAITING_ON = 0x0006  # V7
    PROPOSE_RUN_COMPLETION_ACK = 0x0007  # V7

    INPUT_COMMAND = 0x0400
    OUTPUT_COMMAND = 0x0401
    GET_LAZY_STATE_COMMAND = 0x0402
    SET_STATE_COMMAND = 0x0403
    CLEAR_STATE_COMMAND = 0x0404
    CLEAR_ALL_STATE_COMMAND = 0x0405
    GET_LAZY_STATE_KEYS_COMMAND = 0x0406
    GET_EAGER_STATE_COMMAND = 0x0407
    GET_EAGER_STATE_KEYS_COMMAND = 0x0408
    GET_PROMISE_COMMAND = 0x0409
    PEEK_PROMISE_COMMAND = 0x040A
    COMPLETE_PROMISE_COMMAND = 0x040B
    SLEEP_COMMAND = 0x040C
    CALL_COMMAND = 0x040D
    ONE_WAY_CALL_COMMAND = 0x040E
    SEND_SIGNAL_COMMAND = 0x0410
    RUN_COMMAND = 0x0411
    ATTACH_INVOCATION_COMMAND = 0x0412
    GET_INVOCATION_OUTPUT_COMMAND = 0x0413
    COMPLETE_AWAKEABLE_COMMAND = 0x0414

    GET_LAZY_STATE_COMPLETION_NOTIFICATION = 0x8002
    GET_LAZY_STATE_KEYS_COMPLETION_NOTIFICATION = 0x8006
    GET_PROMISE_COMPLETION_NOTIFICATION = 0x8009
    PEEK_PROMISE_COMPLETION_NOTIFICATION = 0x800A
    COMPLETE_PROMISE_COMPLETION_NOTIFICATION = 0x800B
    SLEEP_COMPLETION_NOTIFICATION = 0x800C
    CALL_COMPLETION_NOTIFICATION = 0x800D
    CALL_INVOCATION_ID_COMPLETION_NOTIFICATION = 0x800E
    RUN_COMPLETION_NOTIFICATION = 0x8011
    ATTACH_INVOCATION_COMPLETION_NOTIFICATION = 0x8012
    GET_INVOCATION_OUTPUT_COMPLETION_NOTIFICATION = 0x8013
    SIGNAL_NOTIFICATION = 0xFBFF


def is_command(ty: int) -> bool:
    """Commands, including custom ones (0xFC00–0xFFFF), which are stored and replayed verbatim."""
    return 0x0400 <= ty <= 0x7FFF or ty >= 0xFC00


def is_notification(ty: int) -> bool:
    return 0x8000 <= ty <= 0xFBFF


def is_control(ty: int) -> bool:
    return ty <= 0x03FF


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    payload: bytes

    def encode(self) -> bytes:
        return HEADER.pack(self.type, self.flags, len(self.payload)) + self.payload

    @classmethod
    def parse(cls, raw: bytes) -> Frame:
        """One whole frame (as stored in the journal)."""
        if len(raw) < HEADER.size:
            raise ProtocolViolation(f"frame of {len(raw)} bytes is shorter than its 8-byte header")
        ty, flags, length = HEADER.unpack_from(raw)
        if len(raw) != HEADER.size + length:
            raise ProtocolViolation(
                f"frame header says {length} payload bytes, found {len(raw) - HEADER.size}"
            )
        return cls(ty, flags, bytes(raw[HEADER.size :]))

    @property
    def name(self) -> str:
        try:
            return MessageType(self.type).name
        except ValueError:
            return f"0x{self.type:04X}"


class FrameDecoder:
    """Incremental decoder: feed response body chunks, get whole frames as they complete."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= HEADER.size:
            ty, flags, length = HEADER.unpack_from(self._buf)
            if flags & ~REQUESTED_ACK:
                raise ProtocolViolation(f"message {ty:#06x} has unknown flags {flags:#06x}")
            if length > MAX_FRAME_LEN:
                raise ProtocolViolation(
                    f"message {ty:#06x} announces {length} bytes, over the {MAX_FRAME_LEN} limit"
                )
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append(Frame(ty, flags, bytes(self._buf[HEADER.size : end])))
            del self._buf[:end]
        return frames

    def finish(self) -> None:
        if self._buf:
            raise ProtocolViolation(f"stream ended inside a message ({len(self._buf)} bytes left over)")
