"""An in-memory stand-in for confluent-kafka's Consumer and Producer, for unit tests of the
Kafka plumbing's failure handling: a test injects a crash, a fatal error or a lost delivery
where a real broker cannot be made to produce one on demand.

Only what kinvoke's clients call is implemented. Monkeypatch a module's `Consumer`/`Producer`
names with `cluster.consumer_factory` / `cluster.producer_factory`.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition


def fatal_error(reason: str = "test: fatal") -> KafkaError:
    return KafkaError(KafkaError._FATAL, reason, fatal=True)


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _error: KafkaError | None = None
    _headers: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


@dataclass
class FakeCluster:
    """Topics as lists of records per partition, plus every client made on them."""

    topics: dict[str, list[list[FakeMessage]]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, p)
    consumers: list[FakeConsumer] = field(default_factory=list)
    producers: list[FakeProducer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cluster_id: str = "fake-cluster"
    consumer_cluster_id: str | None = None  # what consumers see, when "another cluster"

    def create(self, topic: str, partitions: int = 1) -> None:
        self.topics.setdefault(topic, [[] for _ in range(partitions)])

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> FakeMessage:
        with self.lock:
            parts = self.topics[topic]
            if partition is None:
                partition = zlib.crc32(key or b"") % len(parts)
            msg = FakeMessage(topic, partition, len(parts[partition]), key, value, _headers=headers)
            parts[partition].append(msg)
            return msg

    def consumer_factory(self, config: dict[str, Any]) -> FakeConsumer:
        consumer = FakeConsumer(self, config)
        self.consumers.append(consumer)
        return consumer

    def producer_factory(self, config: dict[str, Any]) -> FakeProducer:
        producer = FakeProducer(self, config)
        self.producers.append(producer)
        return producer

    def metadata(self, topic: str, cluster_id: str | None = None) -> SimpleNamespace:
        parts = self.topics.get(topic)
        if parts is None:
            return SimpleNamespace(topics={}, cluster_id=cluster_id or self.cluster_id)
        return SimpleNamespace(
            topics={topic: SimpleNamespace(partitions={p: None for p in range(len(parts))}, error=None)},
            cluster_id=cluster_id or self.cluster_id,
        )


class FakeConsumer:
    def __init__(self, cluster: FakeCluster, config: dict[str, Any]) -> None:
        self.cluster = cluster
        self.config = config
        self.positions: dict[tuple[str, int], int] = {}
        self.assigned_at: list[TopicPartition] = []  # what `assign`/`subscribe` started from
        self.stored: dict[tuple[str, int], int] = {}
        self.fail_polls: list[BaseException] = []  # raised by the next polls, one each
        self.seeks: list[tuple[str, int, int]] = []
        self.fail_commits: list[KafkaError] = []  # raised by the next commits, one each
        self.closed = False

    @property
    def group(self) -> str:
        return str(self.config.get("group.id", ""))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        assert topic is not None
        return self.cluster.metadata(topic, self.cluster.consumer_cluster_id)

    def consumer_group_metadata(self) -> str:
        return self.group

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))
        self.positions[(tp.topic, tp.partition)] = tp.offset

    def commit(self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True) -> None:
        if self.fail_commits:
            raise KafkaException(self.fail_commits.pop(0))
        for tp in offsets or []:
            self.cluster.committed[(self.group, tp.topic, tp.partition)] = tp.offset

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.cluster.topics[tp.topic][tp.partition])

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned_at = list(partitions)
        for tp in partitions:
            end = len(self.cluster.topics[tp.topic][tp.partition])
            offset = {OFFSET_BEGINNING: 0, OFFSET_END: end}.get(tp.offset, tp.offset)
            self.positions[(tp.topic, tp.partition)] = offset

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        tps = []
        for topic in topics:
            for p in range(len(self.cluster.topics[topic])):
                committed = self.cluster.committed.get((self.group, topic, p))
                tps.append(TopicPartition(topic, p, committed if committed is not None else 0))
        self.assign(tps)

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        if self.fail_polls:
            raise self.fail_polls.pop(0)
        with self.cluster.lock:
            for (topic, p), offset in self.positions.items():
                records = self.cluster.topics[topic][p]
                if offset < len(records):
                    self.positions[(topic, p)] = offset + 1
                    return records[offset]
        time.sleep(min(max(timeout, 0), 0.01))
        return None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        out = []
        while len(out) < num_messages:
            msg = self.poll(0)
            if msg is None:
                break
            out.append(msg)
        return out

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for topic, p in self.positions]

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self.cluster.committed.get((self.group, tp.topic, tp.partition), -1001),
            )
            for tp in partitions
        ]

    def store_offsets(self, message: Any = None, offsets: list[TopicPartition] | None = None) -> None:
        for tp in offsets or []:
            self.stored[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        self.closed = True
        for (topic, p), offset in self.stored.items():
            self.cluster.committed[(self.group, topic, p)] = offset


class FakeProducer:
    """Delivers on `poll`/`flush`; a test can make the next deliveries fail, or `produce` raise.

    Transactional too: between `begin_transaction` and `commit_transaction` records and offsets
    are held, and appear together at the commit (an abort drops them); `fail_calls` maps a
    transactional method's name to the errors it raises on its next calls.
    """

    def __init__(self, cluster: FakeCluster, config: dict[str, Any]) -> None:
        self.cluster = cluster
        self.config = config
        self.pending: list[tuple[str, bytes | None, bytes | None, Callable[..., None] | None]] = []
        self.fail_deliveries: list[KafkaError] = []  # the next deliveries report these, one each
        self.hold = False  # keep records pending (a broker that does not answer)
        self.raise_on_produce: BaseException | None = None
        self.purged = False
        self.closed = False
        self._lock = threading.Lock()
        self.fail_calls: dict[str, list[KafkaError]] = {}
        self.calls: list[str] = []
        self.in_transaction = False
        self._txn_records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]] = []
        self._txn_offsets: list[tuple[str, TopicPartition]] = []

    def _transactional(self, name: str) -> None:
        self.calls.append(name)
        failures = self.fail_calls.get(name)
        if failures:
            raise KafkaException(failures.pop(0))

    def init_transactions(self, timeout: float = -1) -> None:
        self._transactional("init_transactions")

    def begin_transaction(self) -> None:
        self._transactional("begin_transaction")
        self.in_transaction = True
        self._txn_records, self._txn_offsets = [], []

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group: Any, timeout: float = -1
    ) -> None:
        self._transactional("send_offsets_to_transaction")
        self._txn_offsets += [(str(group), tp) for tp in offsets]

    def commit_transaction(self, timeout: float = -1) -> None:
        self._transactional("commit_transaction")
        for topic, key, value, headers in self._txn_records:
            self.cluster.append(topic, key, value, headers=headers)
        for group, tp in self._txn_offsets:
            self.cluster.committed[(group, tp.topic, tp.partition)] = tp.offset
        self.in_transaction = False
        self._txn_records, self._txn_offsets = [], []

    def abort_transaction(self, timeout: float = -1) -> None:
        self._transactional("abort_transaction")
        self.in_transaction = False
        self._txn_records, self._txn_offsets = [], []

    @property
    def error_cb(self) -> Callable[[KafkaError], None] | None:
        return self.config.get("error_cb")

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        on_delivery: Callable[..., None] | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        **_: Any,
    ) -> None:
        if self.raise_on_produce is not None:
            raise self.raise_on_produce
        if self.in_transaction:
            self._txn_records.append((topic, key, value, headers))
            return
        with self._lock:
            self.pending.append((topic, key, value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        if self.hold:
            time.sleep(min(max(timeout, 0), 0.01))
            return 0
        with self._lock:
            pending, self.pending = self.pending, []
        for topic, key, value, cb in pending:
            if self.fail_deliveries:
                err = self.fail_deliveries.pop(0)
                if err.fatal() and self.error_cb is not None:
                    self.error_cb(err)
                if cb is not None:
                    cb(err, FakeMessage(topic, -1, -1001, key, value, err))
                continue
            msg = self.cluster.append(topic, key, value)
            if cb is not None:
                cb(None, msg)
        if not pending:
            time.sleep(min(max(timeout, 0), 0.01))
        return len(pending)

    def flush(self, timeout: float = -1) -> int:
        self.poll(0)
        return len(self.pending)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.purged = True
        with self._lock:
            pending, self.pending = self.pending, []
        for topic, key, value, cb in pending:
            if cb is not None:
                err = KafkaError(KafkaError._PURGE_QUEUE, "purged")
                cb(err, FakeMessage(topic, -1, -1001, key, value, err))

    def close(self) -> bool:
        self.closed = True
        return True

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        if self.hold:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "test: broker down"))
        assert topic is not None
        return self.cluster.metadata(topic)
