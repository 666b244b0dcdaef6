"""Tailing a topic in a background thread: the local view of a compacted topic (e.g. metadata)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from kafka_core.kafka import client_config, poll_batch
from schemas.settings import Settings

log = structlog.get_logger(__name__)

RecordHandler = Callable[[str, bytes | None, int, int], None]  # key, value, partition, offset


class TopicView:
    """Reads `topic` from the beginning forever and hands each record to `on_record`.

    `wait_until(partition, offset)` gives read-your-writes: a writer that knows the offset of its
    record waits until the view has applied it.
    """

    def __init__(self, settings: Settings, topic: str, on_record: RecordHandler, name: str = "view") -> None:
        self._settings = settings
        self._topic = topic
        self._on_record = on_record
        self._name = name
        self._applied: dict[int, int] = {}  # partition -> next offset to apply
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-{topic}", daemon=True)
        self._start_ends: dict[int, int] = {}

    def start(self, ready_timeout_s: float = 30.0) -> TopicView:
        self._thread.start()
        self.wait_ready(ready_timeout_s)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def wait_ready(self, timeout_s: float) -> None:
        """Block until everything present at start has been applied."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._start_ends or any(
                self._applied.get(p, 0) < end for p, end in self._start_ends.items()
            ):
                if not self._thread.is_alive():
                    raise RuntimeError(f"view of {self._topic} stopped")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"view of {self._topic} not ready after {timeout_s}s")
                self._cond.wait(min(left, 0.1))

    def wait_until(self, partition: int, offset: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._applied.get(partition, 0) <= offset:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"record {self._topic}[{partition}]@{offset} not seen after {timeout_s}s"
                    )
                self._cond.wait(min(left, 0.1))

    def _run(self) -> None:
        consumer = Consumer(
            client_config(
                self._settings,
                **{
                    "group.id": f"{self._settings.topic_prefix}-{self._name}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                },
            )
        )
        try:
            meta = consumer.list_topics(self._topic, timeout=10.0).topics[self._topic]
            parts = sorted(meta.partitions)
            ends = {}
            for p in parts:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=10.0, cached=False
                )
                ends[p] = high
            consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in parts])
            with self._cond:
                self._start_ends = ends
                self._cond.notify_all()
            while not self._stop.is_set():
                msgs = poll_batch(consumer, 0.1)
                positions = consumer.position([TopicPartition(self._topic, p) for p in parts])
                with self._cond:
                    for msg in msgs:
                        err = msg.error()
                        if err is not None:
                            if err.code() != KafkaError._PARTITION_EOF:
                                log.warning("view.error", topic=self._topic, error=str(err))
                            continue
                        key = msg.key().decode() if msg.key() else ""
                        try:
                            self._on_record(key, msg.value(), msg.partition(), msg.offset())
                        except Exception:
                            log.exception("view.bad_record", topic=self._topic, key=key, offset=msg.offset())
                        self._applied[msg.partition()] = msg.offset() + 1
                    for tp in positions:  # control records (commit markers) advance the position too
                        if tp.offset >= 0:
                            self._applied[tp.partition] = max(self._applied.get(tp.partition, 0), tp.offset)
                    self._cond.notify_all()
        except Exception:
            log.exception("view.crashed", topic=self._topic)
        finally:
            consumer.close()
