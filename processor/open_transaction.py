"""What the processor's open Kafka transaction holds between the loop passes that fill it.

A transaction stays open while the attempts it started run and nothing in it is awaited, so an
attempt's outcome commits with the invocation that started it: a greet is one transaction
instead of two (Kafka's per-commit cost, and the coordinator's marker writes that a transaction
begun right after a commit must wait for, are what a call's latency is made of). Holding changes
nothing the log says: every record applied is already in `commands`; only when the derived
state becomes visible moves.

What someone waits for (an answer, a dead letter) lingers only a few milliseconds, and only
while attempts this transaction started still run (the next invocation of a busy object, the
next calls under load): their outcomes then share the commit, and a transaction carries more
for the same fixed cost. Commands for other invocations and timers due soon commit at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from processor.apply import Applied, ChangelogWrites
from processor.state_machine import Action, InvokeAttempt, NotifyAttempt, ScheduleTimer
from processor.task import PartitionTask


@dataclass
class OpenTransaction:
    began: float = field(default_factory=time.perf_counter)
    tasks: dict[int, PartitionTask] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)  # where each partition's input goes on
    offsets_sent: dict[int, int] | None = None  # the input offsets already in it, if sent early
    after_commit: dict[int, list[Action]] = field(default_factory=dict)  # timers: only what is committed
    records: int = 0
    awaited: bool = False  # an answer, a command or a dead letter is in it: commit soon
    commands: bool = False  # records in `commands`: read_committed readers wait behind them, we too
    attempts: bool = False  # attempts started or told something: their outcomes come soon
    running: set[tuple[str, int]] = field(default_factory=set)  # started in it, outcome not yet in it
    timer_due_ms: int | None = None  # the earliest timer waiting for the commit
    # Changelog writes by partition, the last per key: produced at commit (a compacted topic keeps
    # only the last anyway, and read_committed readers never see the ones before it).
    changelog: dict[int, dict[str, bytes | None]] = field(default_factory=dict)

    def join(self, task: PartitionTask) -> None:
        """Before applying: a task whose records are (being) applied in it is rolled back with it."""
        self.tasks[task.partition] = task

    def write(self, task: PartitionTask, writes: ChangelogWrites) -> None:
        latest = self.changelog.setdefault(task.partition, {})
        for key, value in writes:
            latest.pop(key, None)  # in the order of the last writes
            latest[key] = value

    def add(self, task: PartitionTask, next_offset: int, records: int, applied: Applied) -> None:
        p = task.partition
        self.tasks[p] = task
        self.next_offsets[p] = next_offset
        self.records += records
        self.awaited |= applied.awaited
        self.commands |= applied.commands
        self.running.difference_update(applied.ended)
        for action in applied.actions:
            if isinstance(action, ScheduleTimer):
                self.after_commit.setdefault(p, []).append(action)
                due = action.timer.wake_up_at_ms
                self.timer_due_ms = due if self.timer_due_ms is None else min(self.timer_due_ms, due)
            elif isinstance(action, InvokeAttempt):
                self.attempts = True
                self.running.add((action.invocation_id, action.attempt))
            elif isinstance(action, NotifyAttempt):
                self.attempts = True

    def hold_s(self, hold_s: float, linger_s: float, now_ms: int) -> float:
        """How long after its begin it may stay open: `hold_s` while only its attempts' outcomes
        are missing, `linger_s` while something in it is awaited and attempts it started still
        run, 0 when a timer in it is due within the hold (timers are set only once committed) or it
        holds commands (the outcomes it would wait for may be behind them in `commands`)."""
        if self.commands:
            return 0.0
        if self.timer_due_ms is not None and self.timer_due_ms - now_ms < hold_s * 1000:
            return 0.0
        if self.awaited:
            return linger_s if self.running else 0.0
        return hold_s if self.attempts else 0.0

    def remaining_s(self, hold_s: float, linger_s: float, now_ms: int, now: float | None = None) -> float:
        """How much longer it may stay open (<= 0: commit now)."""
        held = self.hold_s(hold_s, linger_s, now_ms)
        if held <= 0:
            return 0.0
        return self.began + held - (time.perf_counter() if now is None else now)
