"""What the processor's open Kafka transaction holds between the loop passes that fill it.

A transaction stays open while the attempts it started run and nothing in it is awaited, so an
attempt's outcome commits with the invocation that started it: a greet is one transaction
instead of two (Kafka's per-commit cost, and the coordinator's marker writes that a transaction
begun right after a commit must wait for, are what a call's latency is made of). Holding changes
nothing the log says: every record applied is already in `commands`; only when the derived
state becomes visible moves, and never past what someone waits for (answers, commands for other
invocations, dead letters and timers commit at once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from processor.apply import Applied
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
    awaited: bool = False  # an answer, a command or a dead letter is in it: commit now
    attempts: bool = False  # attempts started or told something: their outcomes come soon

    def join(self, task: PartitionTask) -> None:
        """Before applying: a task whose records are (being) applied in it is rolled back with it."""
        self.tasks[task.partition] = task

    def add(self, task: PartitionTask, next_offset: int, records: int, applied: Applied) -> None:
        p = task.partition
        self.tasks[p] = task
        self.next_offsets[p] = next_offset
        self.records += records
        self.awaited |= applied.awaited
        for action in applied.actions:
            if isinstance(action, ScheduleTimer):
                self.after_commit.setdefault(p, []).append(action)
            elif isinstance(action, InvokeAttempt | NotifyAttempt):
                self.attempts = True

    def may_hold(self, hold_s: float, now: float | None = None) -> bool:
        """Whether the commit may wait for more of the log (the outcomes of its attempts)."""
        if hold_s <= 0 or self.awaited or self.after_commit or not self.attempts:
            return False
        return self.remaining_s(hold_s, now) > 0

    def remaining_s(self, hold_s: float, now: float | None = None) -> float:
        return self.began + hold_s - (time.perf_counter() if now is None else now)
