"""Side effects the state machine asks for; the partition processor executes them after commit."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.records import (
    Command,
    InvocationAccepted,
    InvocationResult,
    ManageAnswer,
    OperationAnswer,
    OutputNotReady,
    Timer,
)


@dataclass(frozen=True)
class InvokeAttempt:
    """Run attempt `attempt` of an invocation against its deployment, not before `not_before_ms`."""

    invocation_id: str
    attempt: int
    not_before_ms: int = 0


@dataclass(frozen=True)
class NotifyAttempt:
    """Send `frame` (a notification just journaled) on the stream of the attempt that is running,
    if it is a bidirectional one; otherwise the next attempt replays it from the journal."""

    invocation_id: str
    attempt: int
    index: int  # its journal index: an attempt started with it in its replay skips it
    frame: bytes


@dataclass(frozen=True)
class AbortAttempt:
    """Stop the attempt that is running (the invocation was killed): no more user code runs."""

    invocation_id: str
    attempt: int


@dataclass(frozen=True)
class SendResult:
    """Publish a completed invocation's outcome on `results` (in the same transaction)."""

    result: InvocationResult


@dataclass(frozen=True)
class SendAccepted:
    """Answer a waiting ingress request that is not a result (on `results`, same transaction):
    whether an idempotent send was new, or that an output is not ready yet."""

    accepted: InvocationAccepted | OutputNotReady | ManageAnswer | OperationAnswer


@dataclass(frozen=True)
class ProduceCommand:
    """Append a command for another invocation (a call, a completion) to `commands`, keyed by
    its partition key, in the same transaction."""

    partition_key: int
    command: Command


@dataclass(frozen=True)
class ScheduleTimer:
    """Fire `timer` (as a TimerFired command) when the wall clock reaches its wake-up time."""

    timer: Timer


Action = (
    InvokeAttempt | NotifyAttempt | AbortAttempt | SendResult | SendAccepted | ProduceCommand | ScheduleTimer
)
