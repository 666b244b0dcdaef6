"""The processor's Prometheus metrics (served by `processor.http`).

Counted outside the state machine, which stays a pure function of the log: invocation phase
changes and the counts of invocations by status are taken from the store after Kafka committed
them, attempts are timed by the invoker, transactions by the processor loop. Labels are bounded
by what is registered (service, handler) and by the partition count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from processor.storage import PhaseChange

INVOCATIONS = Gauge(
    "kinvoke_invocations",
    "Invocations of the partitions this processor owns, by status (Restate's sys_invocation "
    "status: scheduled, pending, running, backing-off, suspended, paused, completed) and target, "
    "as committed",
    ["state", "service", "handler"],
)
TRANSITIONS = Counter(
    "kinvoke_invocation_transitions",
    "Invocations that entered a phase (scheduled, inboxed, invoked, suspended, paused, completed), "
    "counted when the processor committed the change",
    ["phase", "service", "handler"],
)
ATTEMPTS_STARTED = Counter(
    "kinvoke_attempts_started", "Attempts the invoker started against a deployment", ["service", "handler"]
)
ATTEMPTS_COMPLETED = Counter(
    "kinvoke_attempts_completed",
    "Attempts that ended, by outcome (ended, suspended, failed, cancelled)",
    ["service", "handler", "outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "kinvoke_attempt_duration_seconds",
    "Time from an attempt's start until its outcome",
    ["service", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
COMMIT_SECONDS = Histogram(
    "kinvoke_transaction_commit_duration_seconds",
    "Time to apply a batch and commit its Kafka transaction (begin to commit answered)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_RECORDS = Histogram(
    "kinvoke_transaction_records",
    "Commands applied per committed transaction (all partitions of the batch)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
CONSUMER_LAG = Gauge(
    "kinvoke_consumer_lag",
    "Records of `commands` not yet consumed, per owned running partition (high watermark - position)",
    ["partition"],
)
RESTORE_SECONDS = Gauge(
    "kinvoke_task_restore_seconds", "How long the partition's last restore took", ["partition"]
)
TASKS = Gauge("kinvoke_tasks", "Owned partition tasks by state", ["state"])


Labels = tuple[str, str, str]  # (state, service, handler)


class InvocationsByState:
    """`kinvoke_invocations`: the sum of the counts of every owned partition. A partition's counts
    are replaced as a whole after each commit that changed them; a partition given up takes its
    contribution away (series no owned partition has any more are removed: another processor
    reports them)."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._by_partition: dict[int, dict[Labels, int]] = {}

    def update(self, partition: int, counts: dict[Labels, int]) -> None:
        old = self._by_partition.get(partition)
        if old == counts:
            return
        self._by_partition[partition] = counts
        self._publish(counts.keys() | (old or {}).keys())

    def drop(self, partition: int) -> None:
        old = self._by_partition.pop(partition, None)
        if old:
            self._publish(old.keys())

    def _publish(self, labels: Iterable[Labels]) -> None:
        for label in labels:
            parts = [c[label] for c in self._by_partition.values() if label in c]
            if parts:
                self._gauge.labels(*label).set(sum(parts))
            else:
                with contextlib.suppress(KeyError):
                    self._gauge.remove(*label)


INVOCATIONS_BY_STATE = InvocationsByState(INVOCATIONS)


def count_transitions(changes: Iterable[PhaseChange]) -> None:
    for change in changes:
        TRANSITIONS.labels(change.phase.lower(), change.service, change.handler).inc()


def forget_partition(partition: int) -> None:
    """A partition given up: its per-partition series and its invocations go (another processor
    reports them)."""
    for gauge in (CONSUMER_LAG, RESTORE_SECONDS):
        with contextlib.suppress(KeyError):
            gauge.remove(str(partition))
    INVOCATIONS_BY_STATE.drop(partition)
