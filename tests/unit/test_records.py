"""Avro records: round trips, single-object encoding, and clear errors on foreign bytes."""

from __future__ import annotations

import pytest

from schemas import codec
from schemas.records import (
    AttemptEnded,
    AttemptFailed,
    Command,
    Ended,
    Failure,
    InvocationPhase,
    InvocationResult,
    InvocationStatus,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
    Success,
    Suspended,
)

TARGET = InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE)


@pytest.mark.parametrize(
    "body",
    [
        Invoke(
            invocation_id="inv_1",
            target=TARGET,
            argument=b'"x"',
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        ),
        AttemptEnded(
            invocation_id="inv_1", attempt=2, deployment_id="dp_1", protocol_version=6, outcome=Ended()
        ),
        AttemptEnded(
            invocation_id="inv_1",
            attempt=1,
            deployment_id="dp_1",
            protocol_version=6,
            new_entries=[b"\x04\x11\x00\x00\x00\x00\x00\x00"],
            outcome=Suspended(waiting_completions=[1], waiting_signals=[1]),
        ),
        AttemptEnded(
            invocation_id="inv_1",
            attempt=3,
            deployment_id="dp_1",
            protocol_version=6,
            outcome=AttemptFailed(code=500, message="boom", next_retry_delay_ms=100),
        ),
    ],
)
def test_command_round_trip(body: Invoke | AttemptEnded) -> None:
    cmd = Command(timestamp_ms=1_700_000_000_000, body=body)
    data = cmd.encode()
    assert data[:2] == codec.MAGIC
    assert codec.schema_name_of(data) == "kinvoke.Command"
    decoded = Command.decode(data)
    assert decoded == cmd
    assert type(decoded.body) is type(body)


@pytest.mark.parametrize(
    "result", [Success(value=b"42"), Failure(code=418, message="nope", metadata={"a": "b"})]
)
def test_status_and_result_round_trip(result: Success | Failure) -> None:
    status = InvocationStatus(
        invocation_id="inv_1",
        phase=InvocationPhase.COMPLETED,
        target=TARGET,
        invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        created_at_ms=1,
        modified_at_ms=2,
        result=result,
    )
    assert InvocationStatus.decode(status.encode()) == status
    r = InvocationResult(invocation_id="inv_1", result=result, completed_at_ms=3)
    assert InvocationResult.decode(r.encode()) == r


@pytest.mark.parametrize("garbage", [b"", b"hello world", b"\xc3\x01" + b"\x00" * 8 + b"x"])
def test_foreign_bytes_are_rejected_with_a_reason(garbage: bytes) -> None:
    with pytest.raises(codec.DecodeError) as e:
        Command.decode(garbage)
    assert str(e.value)


def test_wrong_record_type_is_rejected() -> None:
    r = InvocationResult(invocation_id="inv_1", result=Success(value=b""), completed_at_ms=3)
    with pytest.raises(codec.DecodeError, match="expected a kinvoke.Command"):
        Command.decode(r.encode())


def test_truncated_record_is_rejected() -> None:
    data = Command(
        timestamp_ms=1,
        body=Invoke(
            invocation_id="inv_1",
            target=TARGET,
            argument=b"x",
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        ),
    ).encode()
    with pytest.raises(codec.DecodeError):
        Command.decode(data[:-5])
