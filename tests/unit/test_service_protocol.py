"""Service protocol framing and messages, checked against frames seen on the wire with Restate 1.7.12."""

from __future__ import annotations

import pytest

from schemas.service_protocol import (
    REQUESTED_ACK,
    Frame,
    FrameDecoder,
    MessageType,
    ProtocolViolation,
    decode_message,
    encode_message,
    input_command,
    is_command,
    is_notification,
    notification,
    run_completion_notification,
)
from schemas.service_protocol import protocol_pb2 as pb


def test_header_layout() -> None:
    raw = Frame(MessageType.RUN_COMMAND, 0, b"\x58\x01").encode()
    assert raw[:8] == bytes.fromhex("0411 0000 00000002")
    assert Frame.parse(raw) == Frame(0x0411, 0, b"\x58\x01")


def test_transcript_run_frames_have_the_observed_sizes() -> None:
    # Restate 1.7.12 + Python SDK 1.3.0 (transcript §2): RunCommand len 10 `11:1 12:"step-0"`,
    # ProposeRunCompletion len 5 `1:1 14:"1"`, RunCompletionNotification len 7 `1:1 5:{1:"1"}`.
    run = encode_message(MessageType.RUN_COMMAND, pb.RunCommandMessage(result_completion_id=1, name="step-0"))
    assert len(Frame.parse(run).payload) == 10
    propose = pb.ProposeRunCompletionMessage(result_completion_id=1, value=b"1")
    assert len(propose.SerializeToString()) == 5
    note = Frame.parse(run_completion_notification(propose))
    assert note.type == MessageType.RUN_COMPLETION_NOTIFICATION
    assert len(note.payload) == 7
    decoded = decode_message(note)
    assert decoded.completion_id == 1 and decoded.value.content == b"1"


def test_run_failure_proposal_keeps_the_failure() -> None:
    propose = pb.ProposeRunCompletionMessage(
        result_completion_id=4, failure=pb.Failure(code=500, message="no")
    )
    decoded = decode_message(Frame.parse(run_completion_notification(propose)))
    assert decoded.WhichOneof("result") == "failure"
    assert (decoded.failure.code, decoded.failure.message) == (500, "no")


def test_output_command_from_the_transcript() -> None:
    # OutputCommand (len 17) 14:{1:"\"Hello Alice\""}
    out = encode_message(
        MessageType.OUTPUT_COMMAND, pb.OutputCommandMessage(value=pb.Value(content=b'"Hello Alice"'))
    )
    assert len(Frame.parse(out).payload) == 17


def test_input_command_round_trip() -> None:
    frame = Frame.parse(input_command(b"5", [("x-restate-ingress-path", "/Counter/k1/add")]))
    msg = decode_message(frame)
    assert frame.type == MessageType.INPUT_COMMAND
    assert msg.value.content == b"5"
    assert [(h.key, h.value) for h in msg.headers] == [("x-restate-ingress-path", "/Counter/k1/add")]


def test_suspension_lists_are_packed_and_both_encodings_decode() -> None:
    msg = pb.SuspensionMessage(waiting_completions=[1, 2], waiting_signals=[1])
    data = msg.SerializeToString()
    assert data[:2] == b"\x0a\x02"  # field 1, wire type 2 (packed), two bytes
    unpacked = b"\x08\x01\x08\x02\x10\x01"  # the same lists, unpacked
    again = decode_message(Frame(MessageType.SUSPENSION, 0, unpacked))
    assert list(again.waiting_completions) == [1, 2] and list(again.waiting_signals) == [1]


def test_notification_builder() -> None:
    void = decode_message(
        Frame.parse(notification(MessageType.SLEEP_COMPLETION_NOTIFICATION, completion_id=3))
    )
    assert void.completion_id == 3 and void.WhichOneof("result") == "void"
    sig = decode_message(Frame.parse(notification(MessageType.SIGNAL_NOTIFICATION, signal_id=17, value=b"x")))
    assert sig.signal_id == 17 and sig.value.content == b"x"


def test_type_ranges() -> None:
    assert is_command(MessageType.RUN_COMMAND) and is_command(0xFC01)
    assert not is_command(MessageType.END) and not is_command(MessageType.RUN_COMPLETION_NOTIFICATION)
    assert is_notification(MessageType.SIGNAL_NOTIFICATION) and not is_notification(0xFC00)


def test_decoder_handles_any_chunking() -> None:
    frames = [
        Frame(MessageType.RUN_COMMAND, 0, b"\x58\x01"),
        Frame(MessageType.PROPOSE_RUN_COMPLETION, REQUESTED_ACK, b"\x08\x01\x72\x01\x31"),
        Frame(MessageType.END, 0, b""),
    ]
    stream = b"".join(f.encode() for f in frames)
    for size in (1, 3, 8, 9, len(stream)):
        dec = FrameDecoder()
        got: list[Frame] = []
        for i in range(0, len(stream), size):
            got += dec.feed(stream[i : i + size])
        dec.finish()
        assert got == frames


def test_decoder_rejects_unknown_flags() -> None:
    with pytest.raises(ProtocolViolation, match="unknown flags"):
        FrameDecoder().feed(Frame(MessageType.END, 0x0001, b"").encode())


def test_decoder_rejects_a_truncated_stream() -> None:
    dec = FrameDecoder()
    assert dec.feed(Frame(MessageType.RUN_COMMAND, 0, b"\x58\x01").encode()[:-1]) == []
    with pytest.raises(ProtocolViolation, match="stream ended inside a message"):
        dec.finish()


def test_undecodable_payload_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation, match="undecodable"):
        decode_message(Frame(MessageType.RUN_COMMAND, 0, b"\xff\xff\xff"))
    with pytest.raises(ProtocolViolation, match="unknown message type"):
        decode_message(Frame(0x0300, 0, b""))
    with pytest.raises(ProtocolViolation, match="shorter than its 8-byte header"):
        Frame.parse(b"\x00\x01")
