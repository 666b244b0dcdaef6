"""The registry as every process sees it: a local view of the compacted `metadata` topic.

The admin API writes deployment and service records; every component tails the topic, so a
restart of any process rebuilds the registry by reading the topic to its end.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import structlog
from confluent_kafka import Producer

from kafka_core.kafka import producer_config
from kafka_core.views import TopicView
from schemas.registry import Registry, apply_record
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


class MetadataView:
    """Implements the admin API's `RegistryStore` on Kafka, and serves lookups to the others."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).metadata
        self._registry = Registry()
        self._lock = threading.Lock()
        self._view = TopicView(
            settings, self._topic, self._on_record, name=f"metadata-{uuid.uuid4().hex[:8]}"
        )
        self._producer: Producer | None = None

    def start(self) -> MetadataView:
        self._view.start()
        return self

    def stop(self) -> None:
        self._view.stop()
        if self._producer is not None:
            self._producer.flush(5.0)

    def _on_record(self, key: str, value: bytes | None, partition: int, offset: int) -> None:
        with self._lock:
            apply_record(self._registry, key, value)

    def registry(self) -> Registry:
        return self._registry

    def snapshot(self) -> Registry:
        return self._registry

    async def write(self, records: list[tuple[str, bytes | None]]) -> None:
        """Append registry records and return once this view has applied them (read-your-writes)."""
        if self._producer is None:
            self._producer = Producer(producer_config(self._settings, **{"acks": "all"}))
        loop = asyncio.get_running_loop()
        delivered: list[asyncio.Future[tuple[int, int]]] = []
        for key, value in records:
            fut: asyncio.Future[tuple[int, int]] = loop.create_future()

            def on_delivery(err: object, msg: object, fut: asyncio.Future[tuple[int, int]] = fut) -> None:
                if err is not None:
                    loop.call_soon_threadsafe(
                        fut.set_exception, RuntimeError(f"metadata write failed: {err}")
                    )
                else:
                    loop.call_soon_threadsafe(fut.set_result, (msg.partition(), msg.offset()))  # type: ignore[attr-defined]

            self._producer.produce(self._topic, key=key.encode(), value=value, on_delivery=on_delivery)
            delivered.append(fut)
        await asyncio.to_thread(self._producer.flush, 10.0)
        positions = await asyncio.gather(*delivered)
        last_partition, last_offset = max(positions, key=lambda po: po[1])
        await asyncio.to_thread(self._view.wait_until, last_partition, last_offset)
