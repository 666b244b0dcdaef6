"""The processor's Prometheus metrics (served by `processor.http`).

Counted outside the state machine, which stays a pure function of the log: invocation phase
changes are taken from the store after Kafka committed them, attempts are timed by the invoker,
transactions by the processor loop. Labels are bounded by what is registered (service, handler)
and by the partition count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from processor.storage import PhaseChange

INVOCATIONS = Counter(
    "kinvoke_invocations",
    "Invocations that entered a state (scheduled, inboxed, invoked, suspended, paused, completed), "
    "counted when the processor committed the change",
    ["state", "service", "handler"],
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


def count_transitions(changes: Iterable[PhaseChange]) -> None:
    for change in changes:
        INVOCATIONS.labels(change.phase.lower(), change.service, change.handler).inc()


def forget_partition(partition: int) -> None:
    """A partition given up: its per-partition series go (another processor reports them)."""
    for gauge in (CONSUMER_LAG, RESTORE_SECONDS):
        with contextlib.suppress(KeyError):
            gauge.remove(str(partition))
