"""The partition state machine: a pure function of the `commands` log.

`apply` takes one command and the partition's store and returns the changelog writes and the
actions (side effects) it asks for. It does no I/O and reads no clock or random source: every
time it needs comes in the command, so replaying the log rebuilds the changelog exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from processor.state_machine.actions import (
    AbortAttempt,
    Action,
    InvokeAttempt,
    NotifyAttempt,
    ProduceCommand,
    ScheduleTimer,
    SendAccepted,
    SendResult,
)
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import (
    attempt_ended,
    attempt_progress,
    call_completed,
    get_output,
    invoke,
    manage,
    operate,
    patch_state,
    recover,
    signal,
    timer_fired,
)
from processor.storage import PartitionStore, Transaction
from schemas.records import (
    AttemptEnded,
    AttemptProgress,
    CallCompleted,
    Command,
    GetOutput,
    Invoke,
    ManageInvocation,
    OperateInvocation,
    PatchState,
    Signal,
    TimerFired,
)


@dataclass(frozen=True)
class StepResult:
    writes: list[tuple[str, bytes | None]]
    actions: list[Action]


def apply(store: PartitionStore, command: Command) -> StepResult:
    ctx = StepContext(txn=Transaction(store), now_ms=command.timestamp_ms)
    body = command.body
    if isinstance(body, Invoke):
        invoke.apply(ctx, body)
    elif isinstance(body, AttemptEnded):
        attempt_ended.apply(ctx, body)
    elif isinstance(body, AttemptProgress):
        attempt_progress.apply(ctx, body)
    elif isinstance(body, CallCompleted):
        call_completed.apply(ctx, body)
    elif isinstance(body, TimerFired):
        timer_fired.apply(ctx, body)
    elif isinstance(body, Signal):
        signal.apply(ctx, body)
    elif isinstance(body, GetOutput):
        get_output.apply(ctx, body)
    elif isinstance(body, ManageInvocation):
        manage.apply(ctx, body)
    elif isinstance(body, PatchState):
        patch_state.apply(ctx, body)
    elif isinstance(body, OperateInvocation):
        operate.apply(ctx, body)
    # A Barrier concerns only the processor that wrote it: no state change.
    return StepResult(writes=ctx.txn.writes, actions=ctx.actions)


def recovery_actions(store: PartitionStore) -> list[Action]:
    """What a new owner of the partition must restart: every invocation that was running."""
    return recover.actions(store)


__all__ = [
    "AbortAttempt",
    "Action",
    "InvokeAttempt",
    "NotifyAttempt",
    "ProduceCommand",
    "ScheduleTimer",
    "SendAccepted",
    "SendResult",
    "StepResult",
    "apply",
    "recovery_actions",
]
