"""The partition's durable timers, as the owner fires them.

Timers live in the changelog in firing order (`timer/{wake_up:016d}/…`). The owner keeps only
the earliest ones in memory and loads the next batch when those are used up, so a partition with
many sleeping invocations costs neither memory nor start-up time.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from processor.storage import PartitionStore
from schemas import changelog
from schemas.records import Timer, TimerFired

BATCH = 1024


@dataclass
class TimerQueue:
    heap: list[tuple[int, str, int]] = field(default_factory=list)  # (wake-up ms, invocation, completion)
    horizon: str | None = None  # the last changelog key loaded; later timers are still on disk
    exhausted: bool = False  # every stored timer has been loaded

    def load(self, store: PartitionStore) -> None:
        batch = store.timers_after(self.horizon, BATCH)
        for key, t in batch:
            heapq.heappush(self.heap, (t.wake_up_at_ms, t.invocation_id, t.completion_id))
            self.horizon = key
        self.exhausted = len(batch) < BATCH

    def schedule(self, timer: Timer) -> None:
        key = changelog.timer_key(timer.wake_up_at_ms, timer.invocation_id, timer.completion_id)
        if self.exhausted or self.horizon is None or key <= self.horizon:
            heapq.heappush(self.heap, (timer.wake_up_at_ms, timer.invocation_id, timer.completion_id))
        # else: beyond what is loaded; it comes with a later batch

    def due(self, now_ms: int, store: PartitionStore) -> list[TimerFired]:
        """Timers whose time has come (each once); their TimerFired goes through the log."""
        fired: list[TimerFired] = []
        while True:
            if not self.heap and not self.exhausted:
                self.load(store)
            if not self.heap or self.heap[0][0] > now_ms:
                return fired
            wake_up, invocation_id, completion_id = heapq.heappop(self.heap)
            fired.append(
                TimerFired(invocation_id=invocation_id, completion_id=completion_id, wake_up_at_ms=wake_up)
            )

    def next_due_ms(self) -> int | None:
        return self.heap[0][0] if self.heap else None
