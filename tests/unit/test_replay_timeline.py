"""`kinvoke replay --invocation`'s timeline (processor/replay.py), from `commands` records built
with schemas.records and replayed through the state machine."""

from __future__ import annotations

from processor.replay import render_timeline, timeline
from schemas.ids import InvocationId
from schemas.partitioner import partition_of
from schemas.records import (
    AttemptEnded,
    AttemptFailed,
    Command,
    Ended,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
)
from schemas.service_protocol import MessageType, encode_message
from schemas.service_protocol import protocol_pb2 as pb

PARTITIONS = 4
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z
INV = str(InvocationId.generate(7, T0, 42))
OTHER = str(InvocationId.generate(7, T0, 43))  # same partition key: same partition
PARTITION = partition_of(7, PARTITIONS)
GREET = InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE)


def _invoke(ts: int, inv: str) -> bytes:
    body = Invoke(
        invocation_id=inv,
        target=GREET,
        argument=b'"Alice"',
        invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        reply_to_results=True,
    )
    return Command(timestamp_ms=ts, body=body).encode()


def _attempt(ts: int, n: int, outcome: Ended | AttemptFailed, entries: list[bytes] | None = None) -> bytes:
    body = AttemptEnded(
        invocation_id=INV,
        attempt=n,
        deployment_id="dp_1",
        protocol_version=6,
        new_entries=entries or [],
        outcome=outcome,
    )
    return Command(timestamp_ms=ts, body=body).encode()


def _run(completion_id: int, name: str) -> bytes:
    return encode_message(
        MessageType.RUN_COMMAND, pb.RunCommandMessage(result_completion_id=completion_id, name=name)
    )


def _output(value: bytes) -> bytes:
    return encode_message(MessageType.OUTPUT_COMMAND, pb.OutputCommandMessage(value=pb.Value(content=value)))


FAILED = AttemptFailed(code=500, message="flaky: boom", stacktrace="Traceback\nRuntimeError: flaky: boom")
RECORDS: list[tuple[int, bytes | None]] = [
    (0, _invoke(T0, INV)),
    (1, _invoke(T0 + 5, OTHER)),  # another invocation: not in the timeline
    (2, b"not a command"),  # dead-lettered by the processor: skipped
    (3, _attempt(T0 + 100, 1, FAILED)),
    (4, _attempt(T0 + 150, 1, FAILED)),  # redelivered: changes nothing
    (5, _attempt(T0 + 700, 2, Ended(), [_run(1, "step-1"), _output(b'"Hello Alice"')])),
]


def test_the_timeline_has_every_command_of_the_invocation_with_what_it_did() -> None:
    events = timeline(RECORDS, INV, PARTITION, PARTITIONS)
    assert [(e["offset"], e["command"]) for e in events] == [
        (0, "Invoke"),
        (3, "AttemptEnded"),
        (4, "AttemptEnded"),
        (5, "AttemptEnded"),
    ]
    invoke, failed, repeated, ended = events
    assert invoke["at"] == "2023-11-14T22:13:20.000Z"
    assert invoke["details"]["argument"] == "Alice"
    assert invoke["journal"] == [{"index": 0, "type": "InputCommand", "value": "Alice"}]
    assert invoke["status"]["phase"] == "INVOKED"
    assert invoke["next"] == ["run attempt 1"]

    assert failed["details"]["outcome"]["message"] == "flaky: boom"
    assert failed["details"]["outcome"]["code"] == 500
    assert failed["status"]["attempt"] == 2 and failed["status"]["retry_count"] == 1
    assert failed["status"]["next_retry_at"] == "2023-11-14T22:13:20.600Z"  # 500 ms backoff
    assert failed["next"] == ["run attempt 2 at 2023-11-14T22:13:20.600Z"]

    assert repeated["effect"] == "none (a stale or repeated command)"

    assert [(j["index"], j["type"]) for j in ended["journal"]] == [(1, "RunCommand"), (2, "OutputCommand")]
    assert ended["journal"][0]["name"] == "step-1"
    assert ended["journal"][1]["value"] == "Hello Alice"
    assert ended["status"]["phase"] == "COMPLETED"
    assert ended["status"]["result"] == {"value": "Hello Alice"}
    assert any(n.startswith("publish the result") for n in ended["next"])


def test_the_rendered_timeline_reads_top_down() -> None:
    text = render_timeline(INV, "kinvoke.commands", PARTITION, timeline(RECORDS, INV, PARTITION, PARTITIONS))
    lines = text.splitlines()
    assert lines[0] == f"{INV}: 4 commands on kinvoke.commands[{PARTITION}]"
    assert lines[1] == '2023-11-14T22:13:20.000Z  @0  Invoke Greeter/greet by INGRESS, argument "Alice"'
    assert "2023-11-14T22:13:20.100Z  @3  AttemptEnded attempt 1 on dp_1: failed [500] flaky: boom" in lines
    assert "      RuntimeError: flaky: boom" in lines
    assert (
        "    status: INVOKED (attempt 2, 1 failed, next attempt at 2023-11-14T22:13:20.600Z, "
        "1 journal entries)" in lines
    )
    assert "    effect: none (a stale or repeated command)" in lines
    assert '    journal[2] OutputCommand {"value": "Hello Alice"}' in lines
    assert '    status: COMPLETED (attempt 2, 1 failed, 3 journal entries): {"value": "Hello Alice"}' in lines


def test_an_invocation_without_commands_has_an_empty_timeline() -> None:
    assert timeline(RECORDS, str(InvocationId.generate(7, T0, 99)), PARTITION, PARTITIONS) == []
