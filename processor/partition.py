"""One owned partition of `commands`: its store, its transactional producer, its batches.

The transactional id is tied to the partition (`{prefix}-processor-p{N}`), so whoever owns the
partition next fences this owner and aborts its dangling transaction in `init_transactions()`.
"""

from __future__ import annotations

import heapq
import time
import uuid
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from kafka_core.kafka import producer_config, read_to_end
from processor import state_machine
from processor.state_machine import (
    Action,
    InvokeAttempt,
    ProduceCommand,
    ScheduleTimer,
    SendAccepted,
    SendResult,
)
from processor.storage import PartitionStore
from schemas import codec
from schemas.ids import InvocationId
from schemas.partitioner import routing_key
from schemas.records import Barrier, Command, TimerFired
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


class PoisonCommand(Exception):
    """A command the state machine failed on; it is dead-lettered when the batch is retried."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def transactional_id(settings: Settings, partition: int) -> str:
    return f"{settings.topic_prefix}-processor-p{partition}"


@dataclass
class PartitionProcessor:
    settings: Settings
    partition: int
    consumer: Consumer
    owner: str = "processor"
    topics: Topics = field(init=False)
    store: PartitionStore = field(init=False)
    producer: Producer = field(init=False)
    pending_recovery: list[Action] = field(default_factory=list)
    barrier_nonce: str | None = None  # recovery waits until this owner reads its own barrier back
    poison: dict[int, str] = field(default_factory=dict)  # offset -> why the state machine failed on it
    timers: list[tuple[int, str, int]] = field(
        default_factory=list
    )  # heap of (wake-up ms, invocation, completion)

    def __post_init__(self) -> None:
        self.topics = Topics(self.settings.topic_prefix)
        self.store = PartitionStore(self.partition)
        self.producer = Producer(
            producer_config(
                self.settings,
                **{"transactional.id": transactional_id(self.settings, self.partition), "linger.ms": 0},
            )
        )

    def open(self) -> None:
        """Fence the previous owner, then rebuild the store from the changelog."""
        self.producer.init_transactions(30.0)
        count = 0
        for msg in read_to_end(self.settings, self.topics.changelog, [self.partition]):
            self.store.restore(msg.key().decode(), msg.value())
            count += 1
        self.pending_recovery = state_machine.recovery_actions(self.store)
        self.timers = [
            (t.wake_up_at_ms, t.invocation_id, t.completion_id) for t in self.store.timers.values()
        ]
        heapq.heapify(self.timers)
        if self.pending_recovery:
            self._write_barrier()
        log.info(
            "partition.restored",
            partition=self.partition,
            changelog_records=count,
            invocations=len(self.store.statuses),
            to_resume=len(self.pending_recovery),
        )

    def due_timers(self, now_ms: int) -> list[TimerFired]:
        """Timers whose time has come; their TimerFired goes through the log like any input."""
        fired = []
        while self.timers and self.timers[0][0] <= now_ms:
            wake_up, invocation_id, completion_id = heapq.heappop(self.timers)
            fired.append(
                TimerFired(invocation_id=invocation_id, completion_id=completion_id, wake_up_at_ms=wake_up)
            )
        return fired

    def _write_barrier(self) -> None:
        """Recovery must not start before the previous owner's last committed effects are
        applied; a barrier appended now is read back only after all of them."""
        self.barrier_nonce = uuid.uuid4().hex
        body = Barrier(owner=self.owner, nonce=self.barrier_nonce)
        barrier = Command(timestamp_ms=int(time.time() * 1000), body=body)
        self.producer.begin_transaction()
        self.producer.produce(self.topics.commands, value=barrier.encode(), partition=self.partition)
        self.producer.commit_transaction(30.0)

    def close(self) -> None:
        self.producer.flush(5.0)

    def process(self, messages: list[Message], effects: list[Command]) -> list[Action]:
        """Apply a batch in one Kafka transaction: changelog + results + effects + input offsets."""
        actions: list[Action] = []
        self.producer.begin_transaction()
        try:
            for effect in effects:
                self._produce_command(effect)
            for msg in messages:
                actions.extend(self._apply(msg))
            if messages:
                offsets = [TopicPartition(self.topics.commands, self.partition, messages[-1].offset() + 1)]
                self.producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), 30.0
                )
            self.producer.commit_transaction(30.0)
        except Exception:
            self._abort()
            raise
        return [a for a in actions if isinstance(a, InvokeAttempt)]

    def _apply(self, msg: Message) -> list[Action]:
        if msg.offset() in self.poison:
            self._dead_letter(msg, self.poison[msg.offset()])
            return []
        value = msg.value()
        try:
            command = Command.decode(value or b"")
        except (codec.DecodeError, ValueError) as e:
            self._dead_letter(msg, str(e))
            return []
        if isinstance(command.body, Barrier) and command.body.nonce == self.barrier_nonce:
            recovery, self.pending_recovery, self.barrier_nonce = self.pending_recovery, [], None
            return recovery
        try:
            step = state_machine.apply(self.store, command)
        except Exception as e:
            log.exception("command.failed", partition=self.partition, offset=msg.offset())
            raise PoisonCommand(msg.offset(), f"the state machine failed on this command: {e!r}") from e
        for key, val in step.writes:
            self.producer.produce(
                self.topics.changelog, key=key.encode(), value=val, partition=self.partition
            )
        for action in step.actions:
            published = (
                action.result
                if isinstance(action, SendResult)
                else action.accepted
                if isinstance(action, SendAccepted)
                else None
            )
            if published is not None:
                key = published.invocation_id.encode()
                self.producer.produce(self.topics.results, key=key, value=published.encode())
            elif isinstance(action, ScheduleTimer):
                t = action.timer
                heapq.heappush(self.timers, (t.wake_up_at_ms, t.invocation_id, t.completion_id))
            elif isinstance(action, ProduceCommand):
                # Kafka's default partitioner on the routing key: the target's own partition.
                key = routing_key(action.partition_key)
                self.producer.produce(self.topics.commands, key=key, value=action.command.encode())
        return step.actions

    def _produce_command(self, command: Command) -> None:
        body = command.body
        pk = InvocationId.parse(body.invocation_id).partition_key
        self.producer.produce(
            self.topics.commands, key=routing_key(pk), value=command.encode(), partition=self.partition
        )

    def _dead_letter(self, msg: Message, reason: str) -> None:
        log.warning("command.dead_letter", partition=self.partition, offset=msg.offset(), reason=reason)
        headers = list(msg.headers() or [])
        headers += [
            ("kinvoke.dlq.reason", reason.encode()),
            ("kinvoke.dlq.topic", self.topics.commands.encode()),
            ("kinvoke.dlq.partition", str(self.partition).encode()),
            ("kinvoke.dlq.offset", str(msg.offset()).encode()),
        ]
        self.producer.produce(self.topics.commands_dlq, key=msg.key(), value=msg.value(), headers=headers)

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(10.0)
        except Exception:  # fenced or broker gone: the next owner aborts it for us
            log.warning("partition.abort_failed", partition=self.partition, exc_info=True)
