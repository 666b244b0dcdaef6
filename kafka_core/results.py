"""Waiting for answers from the processors: one tail of the `results` topic per process
(ingress, admin).

The listener starts at the end of `results` before the ingress accepts requests, and a waiter
registers before its Invoke is produced, so no result can slip past.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from typing import Any

import structlog
from confluent_kafka import Consumer, TopicPartition

from kafka_core.kafka import client_config, poll_batch
from schemas import codec
from schemas.records import InvocationAccepted, InvocationResult, ManageAnswer, OutputNotReady
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


Answer = InvocationResult | InvocationAccepted | OutputNotReady | ManageAnswer
_ANSWERS: dict[str, type[Answer]] = {
    t.avro_name: t for t in (InvocationResult, InvocationAccepted, OutputNotReady, ManageAnswer)
}


def _decode(data: bytes) -> Answer:
    name = codec.schema_name_of(data)
    if name not in _ANSWERS:
        raise codec.DecodeError(f"{name} is not a record of the results topic")
    return _ANSWERS[name].decode(data)


class ResultsListener:
    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._loop = loop
        self._topic = Topics(settings.topic_prefix).results
        self._waiters: dict[str, list[asyncio.Future[InvocationResult]]] = defaultdict(list)
        self._ack_waiters: dict[str, list[asyncio.Future[Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="results", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("results listener did not start")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def register(self, invocation_id: str) -> asyncio.Future[InvocationResult]:
        fut: asyncio.Future[InvocationResult] = self._loop.create_future()
        with self._lock:
            self._waiters[invocation_id].append(fut)
        return fut

    def register_ack(self, invocation_id: str) -> asyncio.Future[Any]:
        """A waiter for the answers that are not results (InvocationAccepted, OutputNotReady)."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        with self._lock:
            self._ack_waiters[invocation_id].append(fut)
        return fut

    def unregister(self, invocation_id: str, fut: asyncio.Future[Any]) -> None:
        with self._lock:
            for table in (self._waiters, self._ack_waiters):
                waiters = table.get(invocation_id)
                if waiters and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del table[invocation_id]

    def _deliver(self, record: Answer) -> None:
        table: dict[str, list[asyncio.Future[Any]]] = (
            self._waiters if isinstance(record, InvocationResult) else self._ack_waiters  # type: ignore[assignment]
        )
        with self._lock:
            waiters = table.pop(record.invocation_id, [])
        for fut in waiters:
            if not fut.done():
                fut.set_result(record)

    def _run(self) -> None:
        consumer = Consumer(
            client_config(
                self._settings,
                **{
                    "group.id": f"{self._settings.topic_prefix}-ingress-results",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                },
            )
        )
        try:
            meta = consumer.list_topics(self._topic, timeout=10.0).topics[self._topic]
            parts = []
            for p in sorted(meta.partitions):
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=10.0, cached=False
                )
                parts.append(TopicPartition(self._topic, p, high))
            # Explicit end offsets (not OFFSET_END, resolved lazily): readiness means "from here on".
            consumer.assign(parts)
            self._ready.set()
            while not self._stop.is_set():
                for msg in poll_batch(consumer, 0.1):
                    if msg.error() is not None:
                        continue
                    try:
                        record = _decode(msg.value() or b"")
                    except (codec.DecodeError, ValueError) as e:
                        log.warning("results.undecodable", offset=msg.offset(), error=str(e))
                        continue
                    self._loop.call_soon_threadsafe(self._deliver, record)
        except Exception:
            log.exception("results.crashed")
        finally:
            consumer.close()
