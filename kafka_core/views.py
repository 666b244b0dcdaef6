"""Tailing a topic in a background thread: the local view of a compacted topic (e.g. metadata)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from kafka_core.errors import describe_error
from kafka_core.kafka import client_config, partition_offset, poll_batch, tail_consumer
from kafka_core.supervision import (
    KafkaLink,
    SupervisedThread,
    join_problems,
    partitions_of,
    retry_until_stopped,
)
from schemas.settings import Settings

log = structlog.get_logger(__name__)

RecordHandler = Callable[[str, bytes | None, int, int], None]  # key, value, partition, offset


class TopicView:
    """Reads `topic` from the beginning (or from `applied`) forever and hands each record to
    `on_record`.

    `wait_until(partition, offset)` gives read-your-writes: a writer that knows the offset of its
    record waits until the view has applied it. `catch_up()` gives it to readers in other
    processes: it waits until the view has applied what the topic holds now. The tail runs
    supervised: when it crashes, a new consumer resumes at the offsets already applied (records
    are never applied twice or skipped).
    """

    PROGRESS_EVERY_S = 10.0

    def __init__(
        self,
        settings: Settings,
        topic: str,
        on_record: RecordHandler,
        name: str = "view",
        applied: dict[int, int] | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._on_record = on_record
        self._name = name
        # partition -> next offset to apply; a view over a checkpointed local copy starts there
        self._applied: dict[int, int] = dict(applied or {})
        self._cond = threading.Condition()
        self._start_ends: dict[int, int] = {}
        self._link = KafkaLink(f"view {topic}")
        self._supervisor = SupervisedThread(f"{name}-{topic}", self._run, auto_up=False)
        # End-offset queries of `catch_up`: one client, made on first use, one query at a time;
        # callers that waited for a query that started after they came take its answer.
        self._ends_lock = threading.Lock()
        self._ends_client: Consumer | None = None
        self._ends_tickets = itertools.count()
        self._last_ends: tuple[int, dict[int, int]] | None = None

    def start(self, ready_timeout_s: float = 30.0) -> TopicView:
        self._supervisor.start()
        self.wait_ready(ready_timeout_s)
        return self

    def stop(self) -> None:
        self._supervisor.stop(5.0)
        with self._ends_lock:
            client, self._ends_client = self._ends_client, None
        if client is not None:
            client.close()

    def health(self) -> str | None:
        """None while the view follows its topic, else why it does not."""
        return join_problems(self._supervisor.health(), self._link.problem())

    def applied(self) -> dict[int, int]:
        """Next offset to apply, per partition (what a restarted tail resumes from)."""
        with self._cond:
            return dict(self._applied)

    def _behind(self) -> dict[int, int]:
        """Records still to apply per partition to reach the end seen at start (lock held)."""
        return {
            p: end - self._applied.get(p, 0)
            for p, end in self._start_ends.items()
            if self._applied.get(p, 0) < end
        }

    def wait_ready(self, timeout_s: float) -> None:
        """Block until everything present at start has been applied."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._start_ends or self._behind():
                if self._supervisor.gave_up is not None or not self._supervisor.is_alive():
                    raise RuntimeError(f"view of {self._topic} stopped: {self._supervisor.health()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    why = self._supervisor.health() or "still reading"
                    raise TimeoutError(f"view of {self._topic} not ready after {timeout_s}s ({why})")
                self._cond.wait(min(left, 0.1))

    def wait_until(self, partition: int, offset: int, timeout_s: float = 10.0) -> None:
        """Block until the record at `offset` has been applied; TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._applied.get(partition, 0) <= offset:
                left = deadline - time.monotonic()
                if left <= 0:
                    why = self.health() or "the view is behind"
                    raise TimeoutError(
                        f"record {self._topic}[{partition}]@{offset} not seen after {timeout_s}s ({why})"
                    )
                self._cond.wait(min(left, 0.1))

    def catch_up(self, timeout_s: float) -> None:
        """Block until the view has applied every record the topic holds now (its end offsets when
        called, read from the broker); TimeoutError when that cannot be done within `timeout_s`
        (Kafka does not answer, the view is behind or stopped). A reader in another process than
        the writer calls this before it trusts an absence: whatever was acknowledged to anyone
        before the call is then applied."""
        deadline = time.monotonic() + timeout_s
        try:
            self.wait_ready(timeout_s)
        except RuntimeError as e:  # the tail gave up: nothing to wait for
            raise TimeoutError(str(e)) from None
        ends = self._end_offsets(deadline)
        with self._cond:
            while behind := {p: end for p, end in ends.items() if self._applied.get(p, 0) < end}:
                left = deadline - time.monotonic()
                if left <= 0:
                    why = self.health() or "the view is behind"
                    raise TimeoutError(
                        f"view of {self._topic} did not reach {behind} within {timeout_s:g}s ({why})"
                    )
                self._cond.wait(min(left, 0.1))

    def _end_offsets(self, deadline: float) -> dict[int, int]:
        """The topic's end offsets (read_committed: the last stable offsets), asked now."""
        ticket = next(self._ends_tickets)
        with self._ends_lock:
            last = self._last_ends
            if last is not None and last[0] > ticket:  # asked after we came: as good as our own
                return last[1]
            started = next(self._ends_tickets)
            if self._ends_client is None:
                self._ends_client = Consumer(  # `Consumer` by its name: unit tests replace it
                    client_config(
                        self._settings,
                        **{
                            "group.id": f"{self._settings.topic_prefix}-{self._name}",  # never joined
                            "enable.auto.commit": False,
                            "isolation.level": "read_committed",
                            **KafkaLink(f"view {self._topic} end offsets").config(),
                        },
                    )
                )
            with self._cond:
                parts = sorted(self._start_ends)
            ends: dict[int, int] = {}
            for p in parts:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no end offsets of {self._topic} in time")
                try:
                    _, ends[p] = self._ends_client.get_watermark_offsets(
                        TopicPartition(self._topic, p), timeout=left, cached=False
                    )
                except KafkaException as e:
                    raise TimeoutError(f"cannot read the end offsets of {self._topic}: {e}") from None
            self._last_ends = (started, ends)
            return ends

    def _run(self, stop: threading.Event) -> None:
        group = f"{self._settings.topic_prefix}-{self._name}"
        # `Consumer` by its name here: unit tests replace it with a fake.
        with tail_consumer(self._settings, group, Consumer, **self._link.config()) as consumer:
            self._follow(consumer, stop)

    def _follow(self, consumer: Consumer, stop: threading.Event) -> None:
        sup = self._supervisor
        parts = retry_until_stopped(
            stop,
            sup,
            f"describe {self._topic}",
            lambda: partitions_of(consumer, self._topic),
        )
        if parts is None:
            return
        if not self._start_ends:
            ends = retry_until_stopped(
                stop, sup, f"read the end of {self._topic}", lambda: self._ends(consumer, parts)
            )
            if ends is None:
                return
            with self._cond:
                self._start_ends = ends
                self._cond.notify_all()
        with self._cond:
            start = {p: self._applied.get(p, OFFSET_BEGINNING) for p in parts}
        consumer.assign([TopicPartition(self._topic, p, offset) for p, offset in start.items()])
        self._link.mark_reachable()
        sup.mark_up()
        log.info("view.following", topic=self._topic, start=start, restarts=sup.restarts)
        caught_up = False
        next_progress = time.monotonic() + self.PROGRESS_EVERY_S
        while not stop.is_set():
            if not caught_up:
                with self._cond:
                    behind = self._behind()
                caught_up = not behind
                if caught_up:
                    log.info("view.caught_up", topic=self._topic, applied=self.applied())
                elif time.monotonic() >= next_progress:  # a long catch-up says how far it is
                    next_progress = time.monotonic() + self.PROGRESS_EVERY_S
                    log.info("view.catching_up", topic=self._topic, behind=behind)
            msgs = poll_batch(consumer, 0.1)
            positions = consumer.position([TopicPartition(self._topic, p) for p in parts])
            with self._cond:
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaException(err)
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("view.error", topic=self._topic, error=describe_error(err))
                        continue
                    raw_key = msg.key()
                    key = raw_key.decode() if raw_key else ""
                    partition, offset = partition_offset(msg)
                    try:
                        self._on_record(key, msg.value(), partition, offset)
                    except Exception:
                        log.exception("view.bad_record", topic=self._topic, key=key, offset=offset)
                    self._applied[partition] = offset + 1
                for tp in positions:  # control records (commit markers) advance the position too
                    if tp.offset >= 0:
                        self._applied[tp.partition] = max(self._applied.get(tp.partition, 0), tp.offset)
                self._cond.notify_all()
            if msgs:
                self._link.mark_reachable()
            else:
                self._link.probe(consumer, self._topic)

    def _ends(self, consumer: Consumer, parts: list[int]) -> dict[int, int]:
        ends = {}
        for p in parts:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self._topic, p), timeout=10.0, cached=False
            )
            ends[p] = high
        return ends
