"""Kafka subscriptions: each record of a subscribed topic becomes an Invoke on `commands`.

Every processor runs the consumers of every subscription, in the subscription's consumer group,
so Kafka spreads the topic's partitions over the processors. Delivery is at least once and
enqueueing exactly once: the invocation id is derived from (subscription, topic, partition,
offset), so a record read twice yields the same Invoke, which the state machine runs once. An
offset is stored for commit only after its Invoke is durably in `commands`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
import time
from collections.abc import Callable

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from kafka_core.errors import describe_error
from kafka_core.kafka import partition_offset, producer_config
from kafka_core.metadata import MetadataView
from kafka_core.options import invocation_options
from kafka_core.supervision import (
    KafkaLink,
    SupervisedThread,
    join_problems,
)
from schemas.ids import InvocationId, partition_key_of
from schemas.partitioner import routing_key
from schemas.records import Command, Header, InvocationTarget, Invoke, InvokedBy, InvokedByKind, ServiceType
from schemas.registry import Registry, SubscriptionRecord
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


def invocation_for(
    sub: SubscriptionRecord, registry: Registry, msg: Message, settings: Settings | None = None
) -> Invoke | None:
    """The Invoke for one record, or None (with a log line) when it cannot be one."""
    service, handler = sub.service_and_handler
    svc = registry.service(service)
    h = registry.handler(service, handler)
    if svc is None or h is None:
        log.warning("subscription.sink_missing", subscription=sub.id, sink=sub.sink)
        return None
    key: str | None = None
    if svc.service_type != ServiceType.SERVICE:
        try:
            key = (msg.key() or b"").decode()
        except UnicodeDecodeError:
            log.warning("subscription.key_not_utf8", subscription=sub.id, offset=msg.offset())
            return None
    digest = hashlib.sha256(f"{sub.id},{msg.topic()},{msg.partition()},{msg.offset()}".encode()).digest()
    pk = partition_key_of(key) if key is not None else int.from_bytes(digest[16:24], "big")
    invocation_id = InvocationId(pk, int.from_bytes(digest[:16], "big"))
    headers = [
        Header(name="kafka.offset", value=str(msg.offset())),
        Header(name="kafka.topic", value=msg.topic() or ""),
        Header(name="kafka.partition", value=str(msg.partition())),
        Header(name="restate.subscription.id", value=sub.id),
    ]
    ts_type, ts = msg.timestamp()
    if ts_type and ts >= 0:
        headers.append(Header(name="kafka.timestamp", value=str(ts)))
    raw_key = msg.key()
    if raw_key is not None:
        headers.append(Header(name="kafka.key", value=base64.urlsafe_b64encode(raw_key).decode()))
    return Invoke(
        invocation_id=str(invocation_id),
        target=InvocationTarget(
            service=service, handler=handler, key=key, service_ty=svc.service_type, handler_ty=h.handler_type
        ),
        argument=msg.value() or b"",
        headers=headers,
        invoked_by=InvokedBy(kind=InvokedByKind.SUBSCRIPTION, subscription_id=sub.id),
        options=invocation_options(registry, service, handler, settings) if settings is not None else None,
    )


class _Watermarks:
    """Per source partition, the offset that may be committed: the lowest offset whose Invoke is
    not yet in `commands`, else one past the highest delivered. Delivery reports come per
    `commands` partition, so a later record can be delivered before an earlier one; storing each
    record's own offset would then commit past a record whose Invoke was never written."""

    def __init__(self) -> None:
        self._in_flight: dict[int, set[int]] = {}
        self._high: dict[int, int] = {}  # one past the highest delivered offset
        self._stored: dict[int, int] = {}

    def sent(self, partition: int, offset: int) -> None:
        self._in_flight.setdefault(partition, set()).add(offset)

    def delivered(self, partition: int, offset: int) -> int | None:
        """Record `offset` as written; the partition's committable offset if it moved, else None."""
        in_flight = self._in_flight.setdefault(partition, set())
        in_flight.discard(offset)
        self._high[partition] = max(self._high.get(partition, -1), offset + 1)
        committable = min(in_flight) if in_flight else self._high[partition]
        if committable > self._stored.get(partition, -1):
            self._stored[partition] = committable
            return committable
        return None

    def forget(self, partition: int) -> None:
        for table in (self._in_flight, self._high, self._stored):
            table.pop(partition, None)


class DeliveryFailed(Exception):
    """An Invoke for a subscription record was not written: the consumer restarts from the
    last committed offset, which is before that record."""


class SubscriptionConsumer:
    """One subscription's consumer, in its own supervised thread.

    A crash (a fatal producer or consumer error, an Invoke that could not be written) closes
    both clients (committing the offsets whose Invokes are written) and starts new ones, which
    resume from the committed offsets: no record is skipped, and one read twice enqueues the same
    invocation.
    """

    def __init__(self, settings: Settings, sub: SubscriptionRecord, metadata: MetadataView) -> None:
        self.sub = sub
        self._settings = settings
        self._metadata = metadata
        self._commands = Topics(settings.topic_prefix).commands
        cluster, self.topic = sub.cluster_and_topic
        props: dict[str, str | bool] = {
            "auto.offset.reset": "latest",
            **metadata.registry().clusters[cluster].properties,
            **sub.options,
        }
        # Offsets are stored by us, once the Invoke is in `commands`; committing them is automatic.
        props.update({"enable.auto.commit": True, "enable.auto.offset.store": False})
        self._props = props
        self._consumer_link = KafkaLink(f"subscription {sub.id} consumer")
        self._producer_link = KafkaLink(f"subscription {sub.id} producer")
        # Made here, so a configuration librdkafka refuses fails the start (the runner retries it
        # later) instead of crash-looping the supervised thread until the process gives up.
        self._clients: tuple[Consumer, Producer] | None = self._new_clients()
        self._supervisor = SupervisedThread(f"subscription-{sub.id}", self._run, auto_up=False)

    def start(self) -> None:
        self._supervisor.start()

    def stop(self) -> None:
        self._supervisor.stop(10.0)
        if self._clients is not None:  # never started: close what __init__ made
            consumer, _producer = self._clients
            self._clients = None
            consumer.close()

    def health(self) -> str | None:
        return join_problems(
            self._supervisor.health(), self._consumer_link.problem(), self._producer_link.problem()
        )

    def _new_clients(self) -> tuple[Consumer, Producer]:
        self._consumer_link = KafkaLink(f"subscription {self.sub.id} consumer")
        self._producer_link = KafkaLink(f"subscription {self.sub.id} producer")
        consumer = Consumer({**self._props, **self._consumer_link.config()})
        producer = Producer(producer_config(self._settings, **self._producer_link.config()))
        return consumer, producer

    def _run(self, stop: threading.Event) -> None:
        consumer, producer = self._clients or self._new_clients()
        self._clients = None  # a restart makes new ones
        marks = _Watermarks()
        failures: list[str] = []

        def store(partition: int, offset: int) -> None:
            try:
                consumer.store_offsets(offsets=[TopicPartition(self.topic, partition, offset)])
            except KafkaException as e:  # the partition has moved to another member meanwhile
                log.info("subscription.offset_not_stored", subscription=self.sub.id, error=str(e))

        def on_delivery(err: KafkaError | None, _msg: Message, partition: int, offset: int) -> None:
            if err is not None:
                failures.append(
                    f"the Invoke for {self.topic}[{partition}]@{offset} was not written: "
                    f"{describe_error(err)}"
                )
                return
            committable = marks.delivered(partition, offset)
            if committable is not None:
                store(partition, committable)

        def on_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            # Deliveries first, so the offsets of written Invokes are stored before the partitions go.
            producer.flush(10.0)
            for tp in partitions:
                marks.forget(tp.partition)

        try:
            consumer.subscribe([self.topic], on_revoke=on_revoke, on_lost=on_revoke)
            self._supervisor.mark_up()
            log.info(
                "subscription.started",
                subscription=self.sub.id,
                topic=self.topic,
                sink=self.sub.sink,
                restarts=self._supervisor.restarts,
            )
            while not stop.is_set():
                if failures:
                    raise DeliveryFailed(failures[0])
                for link in (self._consumer_link, self._producer_link):
                    if link.fatal_error is not None:
                        raise KafkaException(link.fatal_error)
                msg = consumer.poll(0.2)
                producer.poll(0)
                if msg is None:
                    self._consumer_link.probe(consumer, self.topic)
                    self._producer_link.probe(producer, self._commands)
                    continue
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    self._consumer_link.error_cb(err)  # logged, at most once a while per kind
                    continue
                self._consumer_link.mark_reachable()
                self._enqueue(msg, producer, marks, on_delivery, store)
        finally:
            try:
                left = producer.flush(10.0)
                if left:
                    log.warning("subscription.unflushed", subscription=self.sub.id, records=left)
            finally:
                try:
                    consumer.close()  # commits the stored offsets
                except Exception:  # noqa: BLE001 - a broken consumer may not close cleanly
                    log.warning("subscription.close_failed", subscription=self.sub.id, exc_info=True)

    def _enqueue(
        self,
        msg: Message,
        producer: Producer,
        marks: _Watermarks,
        on_delivery: Callable[[KafkaError | None, Message, int, int], None],
        store: Callable[[int, int], None],
    ) -> None:
        partition, offset = partition_offset(msg)
        invoke = invocation_for(self.sub, self._metadata.registry(), msg, self._settings)
        marks.sent(partition, offset)
        if invoke is None:  # nothing to run for it: do not read it again
            committable = marks.delivered(partition, offset)
            if committable is not None:
                store(partition, committable)
            return
        pk = InvocationId.parse(invoke.invocation_id).partition_key
        command = Command(timestamp_ms=int(time.time() * 1000), body=invoke)
        while True:
            try:
                producer.produce(
                    self._commands,
                    key=routing_key(pk),
                    value=command.encode(),
                    on_delivery=functools.partial(_delivered, on_delivery, partition, offset),
                )
                break
            except BufferError:  # the producer's queue is full: let it drain
                producer.poll(0.5)
        producer.poll(0)


class SubscriptionRunner:
    """Keeps one consumer per registered subscription, following the registry."""

    RETRY_START_S = 10.0

    def __init__(self, settings: Settings, metadata: MetadataView) -> None:
        self._settings = settings
        self._metadata = metadata
        self._running: dict[str, SubscriptionConsumer] = {}
        self._retry_at: dict[str, float] = {}
        self._supervisor = SupervisedThread("subscriptions", self._run)

    def start(self) -> None:
        self._supervisor.start()

    def stop(self) -> None:
        self._supervisor.stop(15.0)
        for sub_id in list(self._running):
            self._running.pop(sub_id).stop()

    def health(self) -> str | None:
        return join_problems(self._supervisor.health(), *(c.health() for c in list(self._running.values())))

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._reconcile()
            stop.wait(0.5)

    def _reconcile(self) -> None:
        wanted = dict(self._metadata.registry().subscriptions)
        for sub_id in list(self._running):
            if sub_id not in wanted:
                self._running.pop(sub_id).stop()
                log.info("subscription.stopped", subscription=sub_id)
        now = time.monotonic()
        for sub_id, sub in wanted.items():
            if sub_id in self._running or now < self._retry_at.get(sub_id, 0.0):
                continue
            try:
                consumer = SubscriptionConsumer(self._settings, sub, self._metadata)
            except Exception:
                log.exception("subscription.start_failed", subscription=sub_id, retry_in_s=self.RETRY_START_S)
                self._retry_at[sub_id] = now + self.RETRY_START_S
                continue
            self._retry_at.pop(sub_id, None)
            consumer.start()
            self._running[sub_id] = consumer


def _delivered(
    then: Callable[[KafkaError | None, Message, int, int], None],
    partition: int,
    offset: int,
    err: KafkaError | None,
    msg: Message,
) -> None:
    """A delivery report, told which source record (partition, offset) the Invoke came from."""
    then(err, msg, partition, offset)
