"""Decoding kinvoke's records for humans (kafka_core/inspect.py): what `kinvoke topics tail`
prints, from records built with schemas.records, and its one-line errors."""

from __future__ import annotations

import json

import pytest

from kafka_core.inspect import (
    InspectError,
    check_partitions,
    check_reachable,
    compact,
    content,
    decode_frame,
    human_record,
    iso,
    resolve_topic,
)
from schemas import changelog
from schemas.ids import InvocationId
from schemas.partitioner import routing_key
from schemas.records import (
    AttemptEnded,
    AttemptFailed,
    Command,
    InvocationPhase,
    InvocationResult,
    InvocationStatus,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    JournalEntry,
    ServiceType,
    Success,
)
from schemas.service_protocol import MessageType, encode_message, input_command
from schemas.service_protocol import protocol_pb2 as pb
from schemas.settings import Settings
from tests.conftest import free_port

INV = InvocationId.generate(0x0102030405060708, 1_700_000_000_000, 42)
TARGET = InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE)
T0 = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


def test_times_are_iso_8601_utc_with_milliseconds() -> None:
    assert iso(T0) == "2023-11-14T22:13:20.123Z"
    assert iso(None) is None and iso(0) is None


def test_payloads_are_json_where_they_are_json() -> None:
    assert content(b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert content(b'"Alice"') == "Alice"
    assert content(b"plain text") == "plain text"
    assert content(b"\xff\x00") == {"base64": "/wA="}
    assert content(b"") == ""


def test_journal_frames_are_decoded_service_protocol_messages() -> None:
    entry = decode_frame(input_command(b'{"n": 5}', [("content-type", "application/json")]))
    assert entry == {
        "type": "InputCommand",
        "headers": {"content-type": "application/json"},
        "value": {"n": 5},
    }
    sleep = encode_message(
        MessageType.SLEEP_COMMAND, pb.SleepCommandMessage(wake_up_time=T0, result_completion_id=1, name="nap")
    )
    assert decode_frame(sleep) == {
        "type": "SleepCommand",
        "wake_up_time": "2023-11-14T22:13:20.123Z",
        "result_completion_id": 1,
        "name": "nap",
    }
    failure = encode_message(
        MessageType.OUTPUT_COMMAND, pb.OutputCommandMessage(failure=pb.Failure(code=418, message="teapot"))
    )
    assert decode_frame(failure) == {"type": "OutputCommand", "failure": {"code": 418, "message": "teapot"}}
    broken = decode_frame(b"\x04\x00\x00\x00\x00\x00\x00\x09abc")
    assert broken["type"] == "undecodable" and "payload bytes" in broken["error"]


def _invoke() -> Command:
    return Command(
        timestamp_ms=T0,
        body=Invoke(
            invocation_id=str(INV),
            target=TARGET,
            argument=b'"Alice"',
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        ),
    )


def test_a_command_is_named_by_its_body_with_decoded_argument_and_key() -> None:
    rec = human_record(
        "commands", "kinvoke.commands", 3, 17, T0, routing_key(INV.partition_key), _invoke().encode()
    )
    assert rec.kind == "Invoke"
    assert rec.key == "0x0102030405060708"
    assert rec.timestamp == "2023-11-14T22:13:20.123Z"
    assert rec.value["timestamp"] == "2023-11-14T22:13:20.123Z"
    assert rec.value["argument"] == "Alice"
    assert rec.value["target"]["service"] == "Greeter"
    line = rec.render()
    assert "\n" not in line
    assert line.startswith("kinvoke.commands[3]@17 2023-11-14T22:13:20.123Z key=0x0102030405060708 Invoke {")
    assert '"argument": "Alice"' in line and "null" not in line  # unset fields are left out
    assert rec.to_json()["value"]["idempotency_key"] is None  # but kept in --json


def test_an_attempt_outcome_carries_its_error_and_entries() -> None:
    failed = Command(
        timestamp_ms=T0,
        body=AttemptEnded(
            invocation_id=str(INV),
            attempt=2,
            deployment_id="dp_1",
            protocol_version=6,
            new_entries=[input_command(b"1", [])],
            outcome=AttemptFailed(
                code=500, message="boom", stacktrace="Traceback:\n  here\nValueError: boom\n"
            ),
        ),
    )
    rec = human_record("commands", "kinvoke.commands", 0, 1, T0, b"k" * 8, failed.encode())
    assert rec.kind == "AttemptEnded"
    assert rec.value["outcome"]["type"] == "AttemptFailed"
    assert rec.value["outcome"]["message"] == "boom"
    assert rec.value["new_entries"] == [{"type": "InputCommand", "value": 1}]
    # On one line a stack trace is its last line.
    assert '"stacktrace": "… (2 lines) ValueError: boom"' in rec.render()


def test_changelog_records_are_decoded_by_their_schema() -> None:
    status = InvocationStatus(
        invocation_id=str(INV),
        phase=InvocationPhase.INVOKED,
        target=TARGET,
        invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        created_at_ms=T0,
        modified_at_ms=T0 + 1000,
        next_retry_at_ms=T0 + 500,
        attempt=2,
        retry_count=1,
    )
    key = changelog.status_key(str(INV)).encode()
    rec = human_record("changelog", "kinvoke.changelog", 1, 5, T0, key, status.encode())
    assert rec.key == f"status/{INV}"
    assert rec.kind == "InvocationStatus"
    assert rec.value["created_at"] == "2023-11-14T22:13:20.123Z"
    assert rec.value["next_retry_at"] == "2023-11-14T22:13:20.623Z"
    assert "created_at_ms" not in rec.value
    entry = JournalEntry(invocation_id=str(INV), index=0, frame=input_command(b'"x"', []), appended_at_ms=T0)
    jkey = changelog.journal_key(str(INV), 0).encode()
    rec = human_record("changelog", "kinvoke.changelog", 1, 6, T0, jkey, entry.encode())
    assert rec.value["frame"] == {"type": "InputCommand", "value": "x"}
    tomb = human_record("changelog", "kinvoke.changelog", 1, 7, T0, jkey, None)
    assert tomb.kind == "tombstone" and tomb.value is None
    assert tomb.render().endswith(f"key=journal/{INV}/0000000000 tombstone")


def test_results_are_decoded() -> None:
    result = InvocationResult(invocation_id=str(INV), result=Success(value=b'"Hello"'), completed_at_ms=T0)
    rec = human_record("results", "kinvoke.results", 0, 0, T0, str(INV).encode(), result.encode())
    assert rec.kind == "InvocationResult"
    assert rec.value["result"] == {"type": "Success", "value": "Hello"}
    assert rec.value["completed_at"] == "2023-11-14T22:13:20.123Z"


def test_dead_letters_show_their_reason_origin_and_raw_value() -> None:
    headers: list[tuple[str, str | bytes | None]] = [
        ("trace", b"abc"),
        ("kinvoke.dlq.reason", b"not a kinvoke command: missing marker"),
        ("kinvoke.dlq.topic", b"kinvoke.commands"),
        ("kinvoke.dlq.partition", b"2"),
        ("kinvoke.dlq.offset", b"41"),
    ]
    rec = human_record("commands.dlq", "kinvoke.commands.dlq", 0, 3, T0, b"\x00" * 8, b"garbage", headers)
    assert rec.kind == "undecodable"
    assert rec.value["raw"] == "garbage"
    assert rec.dlq == {
        "reason": "not a kinvoke command: missing marker",
        "topic": "kinvoke.commands",
        "partition": "2",
        "offset": "41",
    }
    assert rec.headers == {"trace": "abc"}
    lines = rec.render().splitlines()
    assert lines[0].startswith(
        "kinvoke.commands.dlq[0]@3 2023-11-14T22:13:20.123Z key=0x0000000000000000 undecodable"
    )
    assert lines[1] == "    dead-lettered from kinvoke.commands[2]@41: not a kinvoke command: missing marker"
    assert json.loads(json.dumps(rec.to_json()))["dlq"]["offset"] == "41"


def test_compact_leaves_out_unset_fields() -> None:
    assert compact({"a": None, "b": [], "c": {}, "d": "", "e": 0, "f": False, "g": {"h": None}}) == {
        "e": 0,
        "f": False,
        "g": {},
    }


def test_topics_by_short_or_full_name() -> None:
    settings = Settings(topic_prefix="p")
    assert resolve_topic(settings, "commands.dlq") == ("commands.dlq", "p.commands.dlq")
    assert resolve_topic(settings, "p.changelog") == ("changelog", "p.changelog")
    with pytest.raises(InspectError, match="unknown kinvoke topic 'nope': expected one of commands"):
        resolve_topic(settings, "nope")


def test_unknown_partitions_are_named() -> None:
    check_partitions("t", 4, [0, 3])
    with pytest.raises(InspectError, match=r"^topic t has 4 partitions \(0-3\): no partition 4, 9$"):
        check_partitions("t", 4, [4, 1, 9])


def test_a_closed_port_is_one_line() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(InspectError) as e:
        check_reachable(Settings(bootstrap_servers=f"127.0.0.1:{port}"))
    assert str(e.value) == (
        f"cannot reach Kafka at 127.0.0.1:{port} (KINVOKE_BOOTSTRAP_SERVERS): Connection refused"
    )
