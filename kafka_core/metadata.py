"""The registry as every process sees it: a local view of the compacted `metadata` topic.

The admin API writes deployment and service records; every component tails the topic, so a
restart of any process rebuilds the registry by reading the topic to its end.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from kafka_core.errors import describe_error, error_of
from kafka_core.kafka import client_config, describe_config, producer_config
from kafka_core.supervision import (
    KafkaLink,
    Unavailable,
    WaitTimeout,
    discard_producer,
    join_problems,
)
from kafka_core.views import TopicView
from schemas.registry import Registry, apply_record
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)

# How long a registry write waits for Kafka's acknowledgement (also the producer's
# `message.timeout.ms`), and then for this process' own view to apply it (read-your-writes).
WRITE_DELIVERY_TIMEOUT_S = 10.0
READ_YOUR_WRITES_TIMEOUT_S = 10.0
# How long a reader waits for its view to reach the topic's end before it answers "not found".
CATCH_UP_TIMEOUT_S = 5.0


class MetadataView:
    """Implements the admin API's `RegistryStore` on Kafka, and serves lookups to the others."""

    def __init__(
        self,
        settings: Settings,
        *,
        delivery_timeout_s: float = WRITE_DELIVERY_TIMEOUT_S,
        read_your_writes_timeout_s: float = READ_YOUR_WRITES_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).metadata
        self._registry = Registry()
        self._lock = threading.Lock()
        self._view = TopicView(
            settings, self._topic, self._on_record, name=f"metadata-{uuid.uuid4().hex[:8]}"
        )
        self._delivery_timeout_s = delivery_timeout_s
        self._read_your_writes_timeout_s = read_your_writes_timeout_s
        self._producer_lock = threading.Lock()
        self._producer: Producer | None = None
        self._link: KafkaLink | None = None

    def start(self) -> MetadataView:
        # Every component starts a registry view: one line says how it reaches Kafka (no secrets).
        log.info("kafka.client_config", config=describe_config(client_config(self._settings)))
        self._view.start()
        return self

    def catch_up(self, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Block until this view has applied every registry record in Kafka now, so a deployment
        another process has acknowledged (the admin's 201) is known here; TimeoutError after
        `timeout_s`. Readers call it before answering that something is not registered."""
        self._view.catch_up(timeout_s)

    def stop(self) -> None:
        self._view.stop()
        if self._producer is not None:
            self._producer.flush(5.0)

    def health(self) -> str | None:
        """None while the registry view follows the topic and writes can be made, else why not."""
        link = self._link
        broken = link.fatal_error if link is not None and self._producer is not None else None
        return join_problems(
            self._view.health(),
            f"the metadata producer is unusable: {describe_error(broken)}" if broken is not None else None,
        )

    def _on_record(self, key: str, value: bytes | None, partition: int, offset: int) -> None:
        with self._lock:
            apply_record(self._registry, key, value)

    def registry(self) -> Registry:
        return self._registry

    def snapshot(self) -> Registry:
        return self._registry

    def _current_producer(self) -> tuple[Producer, KafkaLink]:
        with self._producer_lock:
            if self._producer is None or self._link is None:
                self._link = KafkaLink("metadata producer")
                self._producer = Producer(
                    producer_config(
                        self._settings,
                        **{
                            "acks": "all",
                            "message.timeout.ms": int(self._delivery_timeout_s * 1000),
                            **self._link.config(),
                        },
                    )
                )
            return self._producer, self._link

    def _discard(self, producer: Producer, reason: str) -> None:
        """Forget a fatal producer; the next write creates a fresh one."""
        with self._producer_lock:
            if self._producer is not producer:
                return
            self._producer = None
        log.error("metadata.producer_recreated", reason=reason)
        discard_producer(producer, "metadata-producer")

    async def write(self, records: list[tuple[str, bytes | None]]) -> None:
        """Append registry records and return once this view has applied them (read-your-writes).

        Raises `Unavailable` when Kafka does not take them (a fatal producer is replaced, so a
        retry works) and `WaitTimeout` when an acknowledgement or the read-back passes its bound."""
        if not records:
            return
        producer, link = self._current_producer()
        loop = asyncio.get_running_loop()
        delivered: list[asyncio.Future[tuple[int, int]]] = []

        def settle(fut: asyncio.Future[tuple[int, int]], value: Any, error: BaseException | None) -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(value)
            else:
                fut.set_exception(error)

        for key, value in records:
            fut: asyncio.Future[tuple[int, int]] = loop.create_future()

            def on_delivery(
                err: KafkaError | None, msg: Any, fut: asyncio.Future[tuple[int, int]] = fut
            ) -> None:
                if err is None:
                    loop.call_soon_threadsafe(settle, fut, (msg.partition(), msg.offset()), None)
                else:
                    if err.fatal():
                        link.error_cb(err)  # the producer is unusable: replaced after this write
                    error = Unavailable(f"the registry write was not taken by Kafka: {describe_error(err)}")
                    loop.call_soon_threadsafe(settle, fut, None, error)

            try:
                producer.produce(self._topic, key=key.encode(), value=value, on_delivery=on_delivery)
            except BufferError:
                raise Unavailable("the metadata producer's queue is full; retry later") from None
            except KafkaException as e:
                err = error_of(e)
                if err is not None and err.fatal():
                    self._discard(producer, describe_error(err))
                    raise Unavailable(
                        f"the metadata producer failed ({describe_error(err)}) and was recreated; retry"
                    ) from None
                raise Unavailable(
                    f"cannot write to the registry: {describe_error(err) if err else e}"
                ) from None
            delivered.append(fut)
        left = await asyncio.to_thread(producer.flush, self._delivery_timeout_s + 2.0)
        if link.fatal_error is not None:
            self._discard(producer, describe_error(link.fatal_error))
        if left:
            raise WaitTimeout(
                f"Kafka did not acknowledge the registry write within {self._delivery_timeout_s:g}s"
            )
        outcomes = await asyncio.gather(*delivered, return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            if link.fatal_error is not None:
                raise Unavailable(
                    f"the metadata producer failed ({describe_error(link.fatal_error)}) and was recreated; "
                    f"{len(failures)} of {len(outcomes)} records may be missing: retry"
                )
            raise failures[0]
        link.mark_reachable()
        positions = [o for o in outcomes if not isinstance(o, BaseException)]
        last_partition, last_offset = max(positions, key=lambda po: po[1])
        try:
            await asyncio.to_thread(
                self._view.wait_until, last_partition, last_offset, self._read_your_writes_timeout_s
            )
        except TimeoutError as e:
            raise WaitTimeout(f"the registry write is in Kafka but was not read back in time: {e}") from None
