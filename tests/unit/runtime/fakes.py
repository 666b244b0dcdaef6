"""Fakes of the Kafka clients the processor runtime uses, recording what it asks of them
(records are `tests.support.fake_kafka.FakeMessage`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from tests.support.fake_kafka import FakeMessage


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: Any = None


@dataclass
class FakeProducer:
    """A transactional producer; `fail` maps a method name to the KafkaError it raises next."""

    produced: list[Produced] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail: dict[str, KafkaError] = field(default_factory=dict)
    offsets: list[list[TopicPartition]] = field(default_factory=list)
    _pending: list[Produced] = field(default_factory=list)
    _callbacks: list[tuple[Callable[..., None], FakeMessage]] = field(default_factory=list)
    _next_offset: dict[tuple[str, int], int] = field(default_factory=dict)

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise KafkaException(self.fail.pop(name))

    def init_transactions(self, timeout: float = -1) -> None:
        self._maybe_fail("init_transactions")

    def begin_transaction(self) -> None:
        self._maybe_fail("begin_transaction")
        self._pending = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Callable[..., None] | None = None,
        headers: Any = None,
        **_: Any,
    ) -> None:
        record = Produced(topic, key, value, None if partition < 0 else partition, headers)
        self._pending.append(record)
        if on_delivery is not None:
            slot = (topic, max(partition, 0))
            offset = self._next_offset.get(slot, 0)
            self._next_offset[slot] = offset + 1
            self._callbacks.append((on_delivery, FakeMessage(topic, max(partition, 0), offset, key, value)))

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: Any, timeout: float = -1
    ) -> None:
        self._maybe_fail("send_offsets_to_transaction")
        self.offsets.append(offsets)

    def commit_transaction(self, timeout: float = -1) -> None:
        self._maybe_fail("commit_transaction")
        for cb, msg in self._callbacks:
            cb(None, msg)
        self._callbacks = []
        self.produced.extend(self._pending)
        self._pending = []

    def abort_transaction(self, timeout: float = -1) -> None:
        self._maybe_fail("abort_transaction")
        self._pending = []
        self._callbacks = []

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("purge")


@dataclass
class FakeConsumer:
    assigned: list[int] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned += [tp.partition for tp in partitions]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.positions[tp.partition] = tp.offset

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
            for tp in partitions
        ]

    def consumer_group_metadata(self) -> object:
        return object()


@dataclass
class FakeEffects:
    appended: list[tuple[int, bytes, Any]] = field(default_factory=list)

    def append(self, partition: int, key: bytes, command: Any) -> Any:
        from concurrent.futures import Future

        self.appended.append((partition, key, command))
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def start(self) -> FakeEffects:
        return self

    def stop(self) -> None:
        pass


@dataclass
class FakeInvoker:
    invoked: list[tuple[int, str, int]] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    def invoke(self, partition: int, action: Any, request: Any, pinned: Any, service: str) -> None:
        self.invoked.append((partition, action.invocation_id, action.attempt))

    def cancel_partition(self, partition: int) -> None:
        self.cancelled.append(partition)

    def is_alive(self) -> bool:
        return True
