"""Kafka subscriptions: each record of a subscribed topic becomes an Invoke on `commands`.

Every processor runs the consumers of every subscription, in the subscription's consumer group,
so Kafka spreads the topic's partitions over the processors. Exactly once (KIP-447): a batch of
records is one transaction of the consumer's own transactional producer that writes their
Invokes (or dead letters) and commits the batch's source offsets with the consumer's group
metadata, so an offset is committed exactly when everything before it is written, whatever order
the writes complete in, and a zombie member cannot commit once the group has moved on.

A subscription on another Kafka cluster than kinvoke's cannot commit its offsets in kinvoke's
transaction: they are committed right after it, and a crash between the two re-reads the batch.
That is still safe for the Invokes, whose ids are derived from (subscription, topic, partition,
offset): a record read twice yields the same Invoke, which the state machine runs once.

A record with no target to invoke (the service or handler does not exist, was removed since the
subscription was made, or an object's key is not UTF-8) goes to `{prefix}.commands.dlq` — the
commands' dead-letter topic, one for every subscription — with the reason, in the same
transaction, and `kinvoke.dlq.topic`/`partition`/`offset`/`subscription` headers saying where from.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from kafka_core.errors import Disposition, classify, describe
from kafka_core.kafka import partition_offset, poll_batch, producer_config
from kafka_core.metadata import MetadataView
from kafka_core.options import invocation_options
from kafka_core.supervision import (
    KafkaLink,
    SupervisedThread,
    join_problems,
    retry_until_stopped,
)
from processor.apply import dead_letter
from processor.transactions import TransactionalProducer, Wedged
from schemas.ids import InvocationId, partition_key_of
from schemas.partitioner import routing_key
from schemas.records import Command, Header, InvocationTarget, Invoke, InvokedBy, InvokedByKind, ServiceType
from schemas.registry import Registry, SubscriptionRecord
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)

MAX_BATCH = 500  # records per transaction


def invocation_for(
    sub: SubscriptionRecord, registry: Registry, msg: Message, settings: Settings | None = None
) -> Invoke | str:
    """The Invoke for one record, or why it cannot be one (the record is then dead-lettered)."""
    service, handler = sub.service_and_handler
    svc = registry.service(service)
    if svc is None:
        return f"subscription {sub.id}: the target service {service} does not exist"
    h = registry.handler(service, handler)
    if h is None:
        return f"subscription {sub.id}: the target service {service} has no handler {handler}"
    key: str | None = None
    if svc.service_type != ServiceType.SERVICE:
        try:
            key = (msg.key() or b"").decode()
        except UnicodeDecodeError:
            return f"subscription {sub.id}: the record's key is not UTF-8, so not a key of {service}"
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


class SubscriptionConsumer:
    """One subscription's consumer and transactional producer, in its own supervised thread.

    A failed transaction is aborted and the consumer sought back to the batch's first records
    (the last committed offsets), so the batch is read and written again; a fenced or fatal
    producer is replaced first (same transactional id). A crash of the thread closes both clients
    and starts new ones, which resume from the committed offsets.
    """

    def __init__(
        self, settings: Settings, sub: SubscriptionRecord, metadata: MetadataView, transactional_id: str
    ) -> None:
        self.sub = sub
        self._settings = settings
        self._metadata = metadata
        self._topics = Topics(settings.topic_prefix)
        self.transactional_id = transactional_id
        cluster, self.topic = sub.cluster_and_topic
        # What the consumer was made with: the runner restarts it when the cluster is changed.
        self.cluster_properties = dict(metadata.registry().clusters[cluster].properties)
        props: dict[str, Any] = {
            "auto.offset.reset": "latest",
            **self.cluster_properties,
            **sub.options,
        }
        # Offsets are committed by the transaction (or right after it); only committed records
        # of a transactional source are read.
        props.update(
            {
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
            }
        )
        self._props = props
        self._consumer_link = KafkaLink(f"subscription {sub.id} consumer")
        self._producer_link = KafkaLink(f"subscription {sub.id} producer")
        # Made here, so a configuration librdkafka refuses fails the start (the runner retries it
        # later) instead of crash-looping the supervised thread until the process gives up.
        self._consumer: Consumer | None = self._new_consumer()
        self._supervisor = SupervisedThread(f"subscription-{sub.id}", self._run, auto_up=False)
        self.transactions = 0

    def start(self) -> None:
        self._supervisor.start()

    def stop(self) -> None:
        self._supervisor.stop(10.0)
        if self._consumer is not None:  # never started: close what __init__ made
            consumer, self._consumer = self._consumer, None
            consumer.close()

    def health(self) -> str | None:
        return join_problems(
            self._supervisor.health(), self._consumer_link.problem(), self._producer_link.problem()
        )

    def _new_consumer(self) -> Consumer:
        self._consumer_link = KafkaLink(f"subscription {self.sub.id} consumer")
        return Consumer({**self._props, **self._consumer_link.config()})

    def _new_txn(self, stop: threading.Event) -> TransactionalProducer:
        self._producer_link = KafkaLink(f"subscription {self.sub.id} producer")
        config = producer_config(
            self._settings,
            **{
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": self._settings.processor_transaction_timeout_ms,
                "linger.ms": 0,
                **self._producer_link.config(),
            },
        )
        return TransactionalProducer(Producer, config, stopping=stop.is_set)

    def _run(self, stop: threading.Event) -> None:
        consumer = self._consumer or self._new_consumer()
        self._consumer = None  # a restart makes a new one
        txn: TransactionalProducer | None = None
        try:
            txn = retry_until_stopped(
                stop, self._supervisor, "start the subscription's transactions", lambda: self._new_txn(stop)
            )
            if txn is None:
                return  # stopping
            producer = txn.producer
            same_cluster = retry_until_stopped(
                stop, self._supervisor, "read the cluster ids", lambda: self._same_cluster(consumer, producer)
            )
            if same_cluster is None:
                return
            consumer.subscribe([self.topic])
            self._supervisor.mark_up()
            log.info(
                "subscription.started",
                subscription=self.sub.id,
                topic=self.topic,
                sink=self.sub.sink,
                transactional_id=self.transactional_id,
                offsets_in_transaction=same_cluster,
                restarts=self._supervisor.restarts,
            )
            generation = txn.generation
            while not stop.is_set():
                if self._consumer_link.fatal_error is not None:
                    raise KafkaException(self._consumer_link.fatal_error)
                if self._producer_link.fatal_error is not None:
                    self._producer_link.fatal_error = None
                    txn.replace("fatal producer error")
                txn.replace_if_outage()
                if txn.generation != generation:
                    generation = txn.generation
                    self._rewind(consumer)
                records = self._poll(consumer, txn)
                if records:
                    self._transact(consumer, txn, records, same_cluster)
        finally:
            try:
                if txn is not None:
                    txn.close()
            finally:
                try:
                    consumer.close()
                except Exception:  # noqa: BLE001 - a broken consumer may not close cleanly
                    log.warning("subscription.close_failed", subscription=self.sub.id, exc_info=True)

    def _rewind(self, consumer: Consumer) -> None:
        """After a producer replacement, read again from the committed offsets: Kafka has been
        seen to lose a transaction whose commit it had confirmed (a broker restart right after),
        and the position would then be past records whose Invokes were never written. Reading a
        record twice is harmless: its invocation id is derived from it."""
        try:
            assignment = consumer.assignment()
            if not assignment:
                return
            for tp in consumer.committed(assignment, timeout=10):
                if tp.offset >= 0:
                    consumer.seek(tp)
            log.info("subscription.rewound", subscription=self.sub.id, partitions=len(assignment))
        except KafkaException as e:  # revoked meanwhile, or Kafka away: the next owner reads it
            log.warning("subscription.rewind_failed", subscription=self.sub.id, error=describe(e))

    def _same_cluster(self, consumer: Consumer, producer: Producer) -> bool:
        """Whether the subscription's topic is on kinvoke's own cluster: its offsets can then be
        committed in kinvoke's transaction."""
        theirs = consumer.list_topics(self.topic, timeout=10).cluster_id
        ours = producer.list_topics(self._topics.commands, timeout=10).cluster_id
        return theirs is not None and theirs == ours

    def _poll(self, consumer: Consumer, txn: TransactionalProducer) -> list[Message]:
        records: list[Message] = []
        for msg in poll_batch(consumer, 0.2, MAX_BATCH):
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            else:
                self._consumer_link.error_cb(err)  # logged, at most once a while per kind
        if records:
            self._consumer_link.mark_reachable()
        else:
            self._consumer_link.probe(consumer, self.topic)
            self._producer_link.probe(txn.producer, self._topics.commands)
        return records

    def _transact(
        self, consumer: Consumer, txn: TransactionalProducer, records: list[Message], same_cluster: bool
    ) -> None:
        """One transaction: the records' Invokes or dead letters, and the offsets after them."""
        first: dict[int, int] = {}
        after: dict[int, int] = {}
        for msg in records:
            partition, offset = partition_offset(msg)
            first.setdefault(partition, offset)
            after[partition] = offset + 1
        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(after.items())]
        registry = self._metadata.registry()
        try:
            txn.begin()
            for msg in records:
                self._write(msg, registry, txn.producer)
            if same_cluster:
                txn.send_offsets(offsets, consumer.consumer_group_metadata())
            txn.commit()
        except (KafkaException, Wedged) as e:
            self._recover(e, consumer, txn, first)
            return
        self.transactions += 1
        if not same_cluster:
            # Another cluster: after the transaction. If this fails (a rebalance, say) the batch
            # may be read again, by us or the partition's next owner: the same invocation ids.
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as e:
                log.warning("subscription.commit_failed", subscription=self.sub.id, error=describe(e))
        log.debug("subscription.committed", subscription=self.sub.id, records=len(records), offsets=after)

    def _write(self, msg: Message, registry: Registry, producer: Producer) -> None:
        invoke = invocation_for(self.sub, registry, msg, self._settings)
        while True:
            try:
                if isinstance(invoke, str):
                    partition, _ = partition_offset(msg)
                    dead_letter(
                        self._topics,
                        partition,
                        msg,
                        invoke,
                        producer,
                        source_topic=self.topic,
                        extra=(("kinvoke.dlq.subscription", self.sub.id),),
                    )
                else:
                    pk = InvocationId.parse(invoke.invocation_id).partition_key
                    command = Command(timestamp_ms=int(time.time() * 1000), body=invoke)
                    producer.produce(self._topics.commands, key=routing_key(pk), value=command.encode())
                return
            except BufferError:  # the producer's queue is full: let it drain
                producer.poll(0.5)

    def _recover(
        self,
        e: KafkaException | Wedged,
        consumer: Consumer,
        txn: TransactionalProducer,
        first: dict[int, int],
    ) -> None:
        """Abort (or replace a fenced/fatal producer, which aborts), then read the batch again."""
        disposition = Disposition.FATAL if isinstance(e, Wedged) else classify(e)
        log.warning(
            "subscription.transaction_failed",
            subscription=self.sub.id,
            error=describe(e),
            disposition=disposition.value,
        )
        if disposition in (Disposition.FENCED, Disposition.FATAL):
            txn.replace(describe(e))
        else:
            try:
                txn.abort()
            except (KafkaException, Wedged) as abort_error:
                txn.replace(f"abort failed: {describe(abort_error)}")
        for partition, offset in sorted(first.items()):
            try:
                consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as seek_error:  # revoked meanwhile: its next owner reads it
                log.info(
                    "subscription.seek_skipped",
                    subscription=self.sub.id,
                    partition=partition,
                    error=describe(seek_error),
                )


class SubscriptionRunner:
    """Keeps one consumer per registered subscription, following the registry."""

    RETRY_START_S = 10.0

    def __init__(
        self, settings: Settings, metadata: MetadataView, transactional_id: Callable[[], str]
    ) -> None:
        """`transactional_id()`: the processor's own (unique per processor, known once it has
        claimed its slot); each subscription's producer adds the subscription's id to it."""
        self._settings = settings
        self._metadata = metadata
        self._transactional_id = transactional_id
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
        """Subscriptions run while they and their Kafka cluster are registered (one orphaned by a
        forced cluster removal is interrupted, as on Restate); a changed cluster restarts them."""
        registry = self._metadata.registry()
        clusters = registry.clusters
        wanted = {
            sub_id: sub
            for sub_id, sub in registry.subscriptions.items()
            if sub.cluster_and_topic[0] in clusters
        }
        for sub_id in list(self._running):
            cluster = clusters.get(self._running[sub_id].sub.cluster_and_topic[0])
            if (
                sub_id not in wanted
                or cluster is None
                or cluster.properties != self._running[sub_id].cluster_properties
            ):
                self._running.pop(sub_id).stop()
                log.info("subscription.stopped", subscription=sub_id, cluster_changed=sub_id in wanted)
        now = time.monotonic()
        for sub_id, sub in wanted.items():
            if sub_id in self._running or now < self._retry_at.get(sub_id, 0.0):
                continue
            try:
                consumer = SubscriptionConsumer(
                    self._settings, sub, self._metadata, f"{self._transactional_id()}-{sub_id}"
                )
            except Exception:
                log.exception("subscription.start_failed", subscription=sub_id, retry_in_s=self.RETRY_START_S)
                self._retry_at[sub_id] = now + self.RETRY_START_S
                continue
            self._retry_at.pop(sub_id, None)
            consumer.start()
            self._running[sub_id] = consumer
