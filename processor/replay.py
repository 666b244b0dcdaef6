"""`kinvoke replay`: run the `commands` log through the state machine again, offline.

The state machine is a pure function of the log, so replaying a partition's commands from the
beginning must rebuild exactly what the changelog holds. `replay` prints what each command did
(as JSON lines), and with `verify` compares the rebuilt state with the changelog topic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka_core.kafka import read_to_end
from processor import state_machine
from processor.state_machine import InvokeAttempt, SendResult
from processor.storage import PartitionStore
from processor.validation import rejection
from schemas import codec
from schemas.records import AttemptEnded, Barrier, Command, Invoke
from schemas.settings import Settings
from schemas.topics import Topics


@dataclass
class ReplayReport:
    partition: int
    commands: int = 0
    undecodable: int = 0
    store: PartitionStore = field(init=False)
    latest: dict[str, bytes | None] = field(default_factory=dict)  # changelog key -> last value written

    def __post_init__(self) -> None:
        self.store = PartitionStore(self.partition)


def _describe(
    offset: int, command: Command, writes: list[tuple[str, bytes | None]], actions: list[Any]
) -> dict:
    body = command.body
    out: dict[str, Any] = {
        "offset": offset,
        "timestamp_ms": command.timestamp_ms,
        "command": type(body).__name__,
    }
    if isinstance(body, Barrier):
        out["owner"] = body.owner
        return out
    out["invocation_id"] = body.invocation_id
    if isinstance(body, Invoke):
        out["target"] = str(body.target)
    if isinstance(body, AttemptEnded):
        out["attempt"] = body.attempt
        out["outcome"] = type(body.outcome).__name__
        out["new_entries"] = len(body.new_entries)
    out["changelog"] = [k for k, _ in writes]
    out["actions"] = [
        f"invoke attempt {a.attempt}" if isinstance(a, InvokeAttempt) else "send result"
        for a in actions
        if isinstance(a, InvokeAttempt | SendResult)
    ]
    return out


def replay_partition(settings: Settings, partition: int) -> Iterator[tuple[dict, ReplayReport]]:
    """Apply every committed command of `partition`; yields a description per command."""
    report = ReplayReport(partition)
    for msg in read_to_end(settings, Topics(settings.topic_prefix).commands, [partition]):
        try:
            command = Command.decode(msg.value() or b"")
        except (codec.DecodeError, ValueError) as e:
            report.undecodable += 1
            yield {"offset": msg.offset(), "undecodable": str(e)}, report
            continue
        # What the processor dead-lettered changed nothing: skip it the same way.
        reason = rejection(command, partition, settings.partitions)
        if reason is not None:
            report.undecodable += 1
            yield {"offset": msg.offset(), "dead_lettered": reason}, report
            continue
        try:
            step = state_machine.apply(report.store, command)
        except Exception as e:  # noqa: BLE001 - the processor dead-lettered it after a rollback
            report.store.kv.rollback()
            report.store.drop_caches()
            report.undecodable += 1
            yield {"offset": msg.offset(), "dead_lettered": f"the state machine failed on it: {e!r}"}, report
            continue
        report.store.kv.commit()
        report.commands += 1
        for key, value in step.writes:
            report.latest[key] = value
        yield _describe(msg.offset() or 0, command, step.writes, step.actions), report
    if report.commands == 0 and report.undecodable == 0:
        yield {"offset": None, "empty": True}, report


def changelog_latest(settings: Settings, partition: int) -> dict[str, bytes | None]:
    latest: dict[str, bytes | None] = {}
    for msg in read_to_end(settings, Topics(settings.topic_prefix).changelog, [partition]):
        latest[(msg.key() or b"").decode()] = msg.value()
    return latest


def verify(settings: Settings, partition: int) -> list[str]:
    """Differences between the replayed state and the changelog (empty: they agree)."""
    reports = [report for _, report in replay_partition(settings, partition)]
    report = reports[-1]
    stored = changelog_latest(settings, partition)
    problems = []
    for key in sorted(set(report.latest) | set(stored)):
        if report.latest.get(key) != stored.get(key):
            problems.append(f"partition {partition}: {key} differs between replay and changelog")
    return problems


def run(settings: Settings, partitions: list[int], check: bool) -> int:
    if check:
        problems = [p for part in partitions for p in verify(settings, part)]
        for p in problems:
            print(p)
        verdict = "DIFFERS" if problems else "OK, identical to the changelog"
        print(f"replay of partitions {partitions}: {verdict}")
        return 1 if problems else 0
    for part in partitions:
        for line, _ in replay_partition(settings, part):
            print(json.dumps({"partition": part, **line}))
    return 0
