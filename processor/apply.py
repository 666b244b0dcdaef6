"""Applying a task's records inside the processor's open transaction.

Everything a command produces goes to Kafka through the transactional producer: changelog
writes to the task's own changelog partition (co-partitioning), answers to `results`, commands
for other invocations to their partitions, dead letters to `commands.dlq`. The same writes go to
the task's store (uncommitted there until Kafka commits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import structlog
from confluent_kafka import KafkaError, Message

from processor import state_machine
from processor.state_machine import (
    AbortAttempt,
    Action,
    InvokeAttempt,
    NotifyAttempt,
    ProduceCommand,
    ScheduleTimer,
    SendAccepted,
    SendResult,
)
from processor.task import PartitionTask
from processor.validation import rejection
from schemas import codec
from schemas.partitioner import routing_key
from schemas.records import AttemptEnded, Barrier, Command
from schemas.topics import Topics

log = structlog.get_logger(__name__)


class Sink(Protocol):
    """What of a (transactional) producer applying needs; confluent_kafka.Producer is one."""

    def produce(
        self,
        topic: str,
        value: str | bytes | None = ...,
        key: str | bytes | None = ...,
        partition: int = ...,
        *,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = ...,
        headers: list[tuple[str, str | bytes | None]] | None = ...,
    ) -> None: ...


class PoisonCommand(Exception):
    """A command the state machine failed on: the batch is aborted and, when it is applied
    again, that command is dead-lettered instead."""

    def __init__(self, partition: int, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.partition = partition
        self.offset = offset
        self.reason = reason


class Applied(NamedTuple):
    actions: list[Action]  # attempts, notifications and timers for the processor to run
    barrier_seen: bool  # this task's own barrier came by: recovery may start
    awaited: bool  # wrote what someone waits to read: an answer, a dead letter, a command
    commands: bool  # wrote commands (for other invocations): behind them, `commands` waits
    ended: list[tuple[str, int]]  # the attempts (invocation id, attempt) whose outcomes it applied


ChangelogWrites = list[tuple[str, bytes | None]]


def apply_records(
    task: PartitionTask,
    messages: list[Message],
    sink: Sink,
    barrier_nonce: str | None = None,
    decode: Callable[[bytes], Command] = Command.decode,
    changelog: Callable[[PartitionTask, ChangelogWrites], None] | None = None,
) -> Applied:
    """Apply `messages` (all of `task`'s partition, in order). `decode` does no I/O
    (processor.decoding: registry schemas are fetched before the transaction). Changelog writes
    go to `changelog` when given (the processor keeps the last per key until its commit), else
    straight to `sink`."""
    assert task.store is not None
    topics = task.topics
    actions: list[Action] = []
    barrier_seen = False
    awaited = False
    commands = False
    ended: list[tuple[str, int]] = []
    for msg in messages:
        offset = msg.offset()
        assert offset is not None
        if offset in task.poison:
            dead_letter(topics, task.partition, msg, task.poison[offset], sink)
            awaited = True
            continue
        try:
            command = decode(msg.value() or b"")
        except (codec.DecodeError, ValueError) as e:
            dead_letter(topics, task.partition, msg, f"not a kinvoke command: {e}", sink)
            awaited = True
            continue
        reason = rejection(command, task.partition, task.settings.partitions)
        if reason is not None:
            dead_letter(topics, task.partition, msg, reason, sink)
            awaited = True
            continue
        if isinstance(command.body, Barrier):
            barrier_seen |= barrier_nonce is not None and command.body.nonce == barrier_nonce
            continue
        if isinstance(command.body, AttemptEnded):
            ended.append((command.body.invocation_id, command.body.attempt))
        try:
            step = state_machine.apply(task.store, command)
        except Exception as e:
            log.exception("command.failed", partition=task.partition, offset=offset)
            raise PoisonCommand(
                task.partition, offset, f"the state machine failed on this command: {e!r}"
            ) from e
        if changelog is None:
            write_changelog(task, step.writes, sink)
        elif step.writes:
            changelog(task, step.writes)
        for action in step.actions:
            if isinstance(action, SendResult | SendAccepted):
                published = action.result if isinstance(action, SendResult) else action.accepted
                sink.produce(topics.results, key=published.invocation_id.encode(), value=published.encode())
                awaited = True
            elif isinstance(action, ProduceCommand):
                # Kafka's default partitioner on the routing key: the target's own partition.
                sink.produce(
                    topics.commands, key=routing_key(action.partition_key), value=action.command.encode()
                )
                awaited = commands = True
            elif isinstance(action, InvokeAttempt | ScheduleTimer | NotifyAttempt | AbortAttempt):
                actions.append(action)
    return Applied(actions, barrier_seen, awaited, commands, ended)


def write_changelog(task: PartitionTask, writes: ChangelogWrites, sink: Sink) -> None:
    if not writes:
        return
    topic = task.topics.changelog
    for key, value in writes[:-1]:
        sink.produce(topic, key=key.encode(), value=value, partition=task.partition)

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        # The store's checkpoint: the changelog offset after this task's latest record.
        offset = msg.offset()
        if err is None and offset is not None and offset >= 0:
            task.changelog_next = max(task.changelog_next or 0, offset + 1)

    key, value = writes[-1]
    sink.produce(topic, key=key.encode(), value=value, partition=task.partition, on_delivery=on_delivery)


def dead_letter(
    topics: Topics,
    partition: int,
    msg: Message,
    reason: str,
    sink: Sink,
    *,
    source_topic: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    """`msg` as it was (key, value, headers) onto `commands.dlq`, with the reason and where it came
    from (`source_topic`, `commands` unless a subscription's topic) in `kinvoke.dlq.*` headers."""
    log.warning(
        "command.dead_letter",
        topic=source_topic or topics.commands,
        partition=partition,
        offset=msg.offset(),
        reason=reason,
    )
    original = msg.headers() or []
    headers: list[tuple[str, str | bytes | None]] = list(
        original.items() if isinstance(original, dict) else original
    )
    headers += [
        ("kinvoke.dlq.reason", reason.encode()),
        ("kinvoke.dlq.topic", (source_topic or topics.commands).encode()),
        ("kinvoke.dlq.partition", str(partition).encode()),
        ("kinvoke.dlq.offset", str(msg.offset()).encode()),
    ]
    headers += [(name, value.encode()) for name, value in extra]
    sink.produce(topics.commands_dlq, key=msg.key(), value=msg.value(), headers=headers)
