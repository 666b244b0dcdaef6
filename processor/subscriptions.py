"""Kafka subscriptions: each record of a subscribed topic becomes an Invoke on `commands`.

Every processor runs the consumers of every subscription, in the subscription's consumer group,
so Kafka spreads the topic's partitions over the processors. Delivery is at least once and
enqueueing exactly once: the invocation id is derived from (subscription, topic, partition,
offset), so a record read twice yields the same Invoke, which the state machine runs once. An
offset is stored for commit only after its Invoke is durably in `commands`.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import structlog
from confluent_kafka import Consumer, Message, Producer

from kafka_core.kafka import producer_config
from kafka_core.metadata import MetadataView
from schemas.ids import InvocationId, partition_key_of
from schemas.partitioner import routing_key
from schemas.records import Command, Header, InvocationTarget, Invoke, InvokedBy, InvokedByKind, ServiceType
from schemas.registry import Registry, SubscriptionRecord
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


def invocation_for(sub: SubscriptionRecord, registry: Registry, msg: Message) -> Invoke | None:
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
    if msg.key() is not None:
        headers.append(Header(name="kafka.key", value=base64.urlsafe_b64encode(msg.key()).decode()))
    return Invoke(
        invocation_id=str(invocation_id),
        target=InvocationTarget(
            service=service, handler=handler, key=key, service_ty=svc.service_type, handler_ty=h.handler_type
        ),
        argument=msg.value() or b"",
        headers=headers,
        invoked_by=InvokedBy(kind=InvokedByKind.SUBSCRIPTION, subscription_id=sub.id),
    )


class SubscriptionConsumer:
    """One subscription's consumer, in its own thread."""

    def __init__(self, settings: Settings, sub: SubscriptionRecord, metadata: MetadataView) -> None:
        self.sub = sub
        self._metadata = metadata
        self._commands = Topics(settings.topic_prefix).commands
        self._producer = Producer(producer_config(settings))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"subscription-{sub.id}", daemon=True)
        cluster, self.topic = sub.cluster_and_topic
        props = {
            "auto.offset.reset": "latest",
            **metadata.registry().clusters[cluster].properties,
            **sub.options,
        }
        # Offsets are stored by us, once the Invoke is in `commands`; committing them is automatic.
        props.update({"enable.auto.commit": True, "enable.auto.offset.store": False})
        self._consumer = Consumer(props)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        self._consumer.subscribe([self.topic])
        log.info("subscription.started", subscription=self.sub.id, topic=self.topic, sink=self.sub.sink)
        try:
            while not self._stop.is_set():
                msg = self._consumer.poll(0.2)
                if msg is None:
                    self._producer.poll(0)
                    continue
                if msg.error() is not None:
                    log.warning(
                        "subscription.consume_error", subscription=self.sub.id, error=str(msg.error())
                    )
                    continue
                invoke = invocation_for(self.sub, self._metadata.registry(), msg)
                if invoke is None:
                    self._consumer.store_offsets(msg)  # nothing to run for it: do not read it again
                    continue
                pk = InvocationId.parse(invoke.invocation_id).partition_key
                command = Command(timestamp_ms=int(time.time() * 1000), body=invoke)
                self._producer.produce(
                    self._commands,
                    key=routing_key(pk),
                    value=command.encode(),
                    on_delivery=lambda err, _m, msg=msg: None if err else self._consumer.store_offsets(msg),
                )
                self._producer.poll(0)
        except Exception:
            log.exception("subscription.crashed", subscription=self.sub.id)
        finally:
            self._producer.flush(10)
            self._consumer.close()


class SubscriptionRunner:
    """Keeps one consumer per registered subscription, following the registry."""

    def __init__(self, settings: Settings, metadata: MetadataView) -> None:
        self._settings = settings
        self._metadata = metadata
        self._running: dict[str, SubscriptionConsumer] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="subscriptions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._reconcile()
            self._stop.wait(0.5)
        for consumer in self._running.values():
            consumer.stop()

    def _reconcile(self) -> None:
        wanted = dict(self._metadata.registry().subscriptions)
        for sub_id in list(self._running):
            if sub_id not in wanted:
                self._running.pop(sub_id).stop()
                log.info("subscription.stopped", subscription=sub_id)
        for sub_id, sub in wanted.items():
            if sub_id not in self._running:
                try:
                    consumer = SubscriptionConsumer(self._settings, sub, self._metadata)
                except Exception:
                    log.exception("subscription.start_failed", subscription=sub_id)
                    continue
                consumer.start()
                self._running[sub_id] = consumer
