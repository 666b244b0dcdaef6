"""Kafka plumbing shared by the components: client configs, topic creation, reading to the end."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from schemas.settings import Settings, redacted, topic_max_message_bytes
from schemas.topics import Topics, TopicSpec

log = structlog.get_logger(__name__)


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The base of every kinvoke Kafka client's configuration (consumers, producers, admin
    clients, the tools): the operator's librdkafka properties (`KINVOKE_KAFKA_CONFIG_FILE`,
    `KINVOKE_KAFKA_PROPERTIES`, `KINVOKE_KAFKA_<PROPERTY>`: security, SASL, TLS, …), the bootstrap
    servers, then what the caller needs (`extra`: isolation level, idempotence, group ids), which
    wins because kinvoke's guarantees depend on it.

    `message.max.bytes` is `KINVOKE_MAX_RECORD_BYTES` for every client: the largest record a
    producer sends (librdkafka's default, 1,000,000, is below an Invoke record of a 32 MiB body);
    librdkafka raises a consumer's fetch.max.bytes and receive.message.max.bytes to fit it."""
    return {
        **settings.kafka_properties,
        "bootstrap.servers": settings.bootstrap_servers,
        "message.max.bytes": settings.max_record_bytes,
        **extra,
    }


def describe_config(config: dict[str, Any]) -> dict[str, Any]:
    """A client configuration fit for a log line or an error message: secrets as `***`, callbacks
    (loggers, error callbacks) left out."""
    return {k: v for k, v in redacted(config).items() if isinstance(v, str | int | float | bool)}


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, murmur2 partitioner (Kafka's default), low linger: calls wait on these writes."""
    return client_config(
        settings,
        **{"enable.idempotence": True, "partitioner": "murmur2_random", "linger.ms": 1, **extra},
    )


def create_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create kinvoke's topics if missing; an existing topic with another partition count is an error."""
    admin = AdminClient(client_config(settings))
    specs = topic_specs(settings)
    existing = admin.list_topics(timeout=timeout_s).topics
    created: list[str] = []
    missing: list[TopicSpec] = []
    for spec in specs:
        meta = existing.get(spec.name)
        if meta is None:
            missing.append(spec)
        elif len(meta.partitions) != spec.partitions:
            raise RuntimeError(
                f"topic {spec.name} has {len(meta.partitions)} partitions, kinvoke is configured for "
                f"{spec.partitions}; partition counts are fixed at creation"
            )
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=settings.replication_factor,
                    config=s.config,
                )
                for s in missing
            ],
            operation_timeout=timeout_s,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout_s)
                created.append(name)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    if created:
        log.info("topics.created", topics=created)
    raise_record_limits(admin, settings, [s.name for s in specs if s.name not in created], timeout_s)
    return created


def raise_record_limits(
    admin: AdminClient, settings: Settings, topics: list[str], timeout_s: float = 15.0
) -> list[str]:
    """Raise `max.message.bytes` of existing kinvoke topics that allow less than
    `KINVOKE_MAX_RECORD_BYTES` needs (topics created before the setting, or by hand), so that a
    large request is not refused by the broker long after start-up. Where kinvoke may not alter
    them (no AlterConfigs permission), say which records will be refused."""
    want = topic_max_message_bytes(settings.max_record_bytes)
    if not topics:
        return []
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    low: dict[str, int] = {}
    for res, fut in admin.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entry = fut.result(timeout_s).get("max.message.bytes")
        except KafkaException as e:  # no DescribeConfigs permission: say so, start anyway
            log.warning(
                "topics.record_limit_unknown",
                topic=res.name,
                needed=want,
                error=str(e),
                message=f"cannot read max.message.bytes of {res.name}: records over it will be "
                f"refused; it needs {want} for records of KINVOKE_MAX_RECORD_BYTES",
            )
            continue
        if entry is not None and entry.value is not None and int(entry.value) < want:
            low[res.name] = int(entry.value)
    if not low:
        return []
    alter = [
        ConfigResource(
            ResourceType.TOPIC,
            t,
            incremental_configs=[
                ConfigEntry("max.message.bytes", str(want), incremental_operation=AlterConfigOpType.SET)
            ],
        )
        for t in low
    ]
    raised: list[str] = []
    for res, fut in admin.incremental_alter_configs(alter, request_timeout=timeout_s).items():
        try:
            fut.result(timeout_s)
            raised.append(res.name)
        except KafkaException as e:
            log.error(
                "topics.record_limit_too_low",
                topic=res.name,
                max_message_bytes=low[res.name],
                needed=want,
                error=str(e),
                message=f"records over {low[res.name]} bytes (request bodies a little smaller) will "
                f"be refused by {res.name}: set its max.message.bytes to {want} or lower "
                "KINVOKE_MAX_RECORD_BYTES",
            )
    if raised:
        log.info("topics.record_limit_raised", topics=raised, max_message_bytes=want)
    return raised


def check_record_limits(
    settings: Settings,
    topics: list[str],
    timeout_s: float = 15.0,
    admin_factory: Callable[[dict[str, Any]], AdminClient] = AdminClient,
) -> list[str]:
    """What `create_topics` does for the topics a component writes, when it is started on its
    own (`kinvoke processor`, `kinvoke ingress`) against topics it did not create: raise a
    `max.message.bytes` below what `KINVOKE_MAX_RECORD_BYTES` needs, or say in one error line
    which topic refuses which records (`raise_record_limits`). Missing topics are left to whoever
    creates them; a broker that does not answer now is one warning (start-up goes on)."""
    admin = admin_factory(client_config(settings))
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as e:
        log.warning(
            "topics.record_limit_unchecked",
            topics=topics,
            error=str(e),
            message="cannot check the topics' max.message.bytes against KINVOKE_MAX_RECORD_BYTES: "
            f"the broker did not answer ({e})",
        )
        return []
    return raise_record_limits(admin, settings, [t for t in topics if t in existing], timeout_s)


def check_record_limits_in_background(settings: Settings, topics: list[str]) -> threading.Thread:
    """`check_record_limits` off the start-up path (the component serves meanwhile; a broker
    that is down must not hold it up)."""

    def check() -> None:
        try:
            check_record_limits(settings, topics)
        except Exception:  # noqa: BLE001 - a check: the component runs anyway
            log.warning("topics.record_limit_check_failed", topics=topics, exc_info=True)

    thread = threading.Thread(target=check, name="record-limits", daemon=True)
    thread.start()
    return thread


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """kinvoke's topics with their configs: kinvoke's own, then `KINVOKE_TOPIC_CONFIGS` ("*" for
    every topic, then the topic's own entry). Only used when a topic is created."""
    topics = Topics(settings.topic_prefix)
    specs = topics.specs(settings.partitions, delete_retention_ms=settings.changelog_delete_retention_ms)
    overrides = settings.topic_configs
    return [
        TopicSpec(
            spec.name,
            spec.partitions,
            {
                **spec.config,
                "max.message.bytes": str(topic_max_message_bytes(settings.max_record_bytes)),
                **overrides.get("*", {}),
                **overrides.get(spec.name.removeprefix(f"{topics.prefix}."), {}),
            },
        )
        for spec in specs
    ]


TAIL_FETCH_WAIT_MS = 5000


@contextlib.contextmanager
def tail_consumer(
    settings: Settings, group_id: str, factory: Callable[[dict[str, Any]], Consumer] = Consumer, **extra: Any
) -> Iterator[Consumer]:
    """A read_committed consumer that assigns its partitions itself (it never joins `group_id`),
    closed however the caller ends. Reset to the earliest record only if a position is gone
    (the broker lost its data).

    Its fetches wait up to 5 s at the end of the log: the broker answers as soon as a record
    (or a commit marker) arrives, so this only makes idle followers cheap (every idle fetch
    costs the broker; 500 ms, librdkafka's default, doubled an idle stack's CPU)."""
    consumer = factory(
        client_config(
            settings,
            **{
                "group.id": group_id,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": TAIL_FETCH_WAIT_MS,
                **extra,
            },
        )
    )
    try:
        yield consumer
    finally:
        try:
            consumer.close()
        except Exception:  # noqa: BLE001 - a broken consumer may not close cleanly
            log.warning("kafka.consumer_close_failed", group=group_id, exc_info=True)


def partition_offset(msg: Message) -> tuple[int, int]:
    """A consumed record's partition and offset (librdkafka sets both on every record it returns)."""
    partition, offset = msg.partition(), msg.offset()
    if partition is None or offset is None:
        raise ValueError("a record without partition or offset (not one returned by a consumer)")
    return partition, offset


def poll_batch(consumer: Consumer, timeout_s: float, max_messages: int = 500) -> list[Message]:
    """Wait up to `timeout_s` for the first record, then take what else is already there.

    `Consumer.consume(n, timeout)` waits until it has n records or the timeout passes, which
    would put the whole timeout on every request's path.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)]


def read_to_end(
    settings: Settings, topic: str, partitions: list[int], *, timeout_s: float = 60.0
) -> Iterator[Message]:
    """All committed records of `partitions`, from the beginning up to the end as of the call.

    This is how a partition's state is restored from its compacted changelog (Kafka Streams'
    restore): read_committed, so an aborted transaction of a dead owner is never seen.
    """
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": f"{settings.topic_prefix}-restore",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            },
        )
    )
    try:
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0, cached=False)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        remaining = set(ends)
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {topic} {sorted(remaining)} took longer than {timeout_s}s")
            for msg in poll_batch(consumer, 0.1, 1000):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                        continue
                    raise KafkaException(err)
                yield msg
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None and offset + 1 >= ends[partition]:
                    remaining.discard(partition)
    finally:
        consumer.close()
