"""Shared fixtures for state machine tests: a store, command builders, frame builders."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from processor import state_machine
from processor.state_machine import Action, StepResult
from processor.storage import PartitionStore
from schemas.ids import InvocationId
from schemas.records import (
    AttemptEnded,
    AttemptFailed,
    Command,
    Ended,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ResolvedCallee,
    ServiceType,
    Suspended,
)
from schemas.service_protocol import MessageType, encode_message
from schemas.service_protocol import protocol_pb2 as pb

INV = str(InvocationId.generate(7, 1_700_000_000_000, 42))
GREET = InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE)


def invoke(ts: int = 1000, inv: str = INV, reply: bool = True, argument: bytes = b'"Alice"') -> Command:
    return Command(
        timestamp_ms=ts,
        body=Invoke(
            invocation_id=inv,
            target=GREET,
            argument=argument,
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
            reply_to_results=reply,
        ),
    )


def attempt(
    ts: int,
    n: int,
    entries: list[bytes],
    outcome: Ended | Suspended | AttemptFailed,
    inv: str = INV,
    callees: list[ResolvedCallee] | None = None,
) -> Command:
    """An AttemptEnded effect; `callees` are the registry answers for the attempt's calls."""
    return Command(
        timestamp_ms=ts,
        body=AttemptEnded(
            invocation_id=inv,
            attempt=n,
            deployment_id="dp_1",
            protocol_version=6,
            new_entries=entries,
            outcome=outcome,
            callees=callees or [],
        ),
    )


def output(value: bytes) -> bytes:
    return encode_message(MessageType.OUTPUT_COMMAND, pb.OutputCommandMessage(value=pb.Value(content=value)))


def output_failure(code: int, message: str) -> bytes:
    return encode_message(
        MessageType.OUTPUT_COMMAND, pb.OutputCommandMessage(failure=pb.Failure(code=code, message=message))
    )


def run(completion_id: int, name: str = "step") -> bytes:
    return encode_message(
        MessageType.RUN_COMMAND, pb.RunCommandMessage(result_completion_id=completion_id, name=name)
    )


def propose(completion_id: int, value: bytes) -> bytes:
    return encode_message(
        MessageType.PROPOSE_RUN_COMPLETION,
        pb.ProposeRunCompletionMessage(result_completion_id=completion_id, value=value),
    )


def sleep(completion_id: int) -> bytes:
    return encode_message(
        MessageType.SLEEP_COMMAND,
        pb.SleepCommandMessage(wake_up_time=5000, result_completion_id=completion_id),
    )


def attach_invocation(completion_id: int) -> bytes:
    return encode_message(
        MessageType.ATTACH_INVOCATION_COMMAND,
        pb.AttachInvocationCommandMessage(invocation_id=INV, result_completion_id=completion_id),
    )


@dataclass
class Harness:
    """Applies commands in order, keeping every step's writes and actions for assertions."""

    store: PartitionStore = field(default_factory=lambda: PartitionStore(0))
    steps: list[StepResult] = field(default_factory=list)

    def apply(self, *commands: Command) -> list[Action]:
        actions: list[Action] = []
        for cmd in commands:
            # Through the codec, as on the wire: the state machine sees what Kafka delivers.
            result = state_machine.apply(self.store, Command.decode(cmd.encode()))
            self.steps.append(result)
            actions.extend(result.actions)
        return actions

    @property
    def writes(self) -> list[tuple[str, bytes | None]]:
        return [w for s in self.steps for w in s.writes]


@pytest.fixture
def sm() -> Harness:
    return Harness()
