"""A partition task: one owned partition of `commands`, its store, timers and recovery.

As Kafka Streams' StreamTask, a task has explicit states:

    CREATED ──restore()──▶ RESTORING ──▶ RUNNING ──close()──▶ CLOSED
       └──────────────────────close()──────────────────────────┘

RESTORING runs in the restorer thread, outside the rebalance callback, while the partition is
paused in the group consumer: it waits until the partition's committed offset is stable (the
previous owner's transaction is finished), opens the local store, and reads the changelog from
the store's checkpoint to its end. RUNNING is driven by the processor loop: batches are applied
inside the processor's transaction and committed to the store only once Kafka committed them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kafka_core.changelog_store import ChangelogStore
from kafka_core.kafka import client_config, poll_batch
from processor.state_dir import FileLock, StateDirectory
from processor.storage import PartitionStore
from processor.timers import TimerQueue
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)

RESTORE_COMMIT_EVERY = 20_000  # changelog records between store commits while restoring
PROGRESS_EVERY_S = 2.0


class TaskState(Enum):
    CREATED = "created"
    RESTORING = "restoring"
    RUNNING = "running"
    CLOSED = "closed"


class TaskClosed(Exception):
    """The task was closed (revoked) while restoring."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PartitionTask:
    partition: int
    settings: Settings
    state_dir: StateDirectory | None  # None: in-memory store (no checkpoint kept)
    state: TaskState = TaskState.CREATED
    store: PartitionStore | None = None
    start_offset: int = 0  # where `commands` is consumed from once running
    committed_offset: int = 0  # the commands offset after the last committed transaction
    catch_up_offset: int = 0  # recovery starts once the consumer has read up to here
    recovery_pending: bool = True
    started: set[tuple[str, int]] = field(default_factory=set)  # attempts started before recovery
    timers: TimerQueue = field(default_factory=TimerQueue)
    poison: dict[int, str] = field(default_factory=dict)  # offset -> why the state machine failed on it
    restored_records: int = 0
    restore_ms: int = 0
    changelog_next: int | None = None  # next changelog offset after this task's last written record
    _lock: FileLock | None = None
    _closing: threading.Event = field(default_factory=threading.Event)

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    # -- RESTORING ------------------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild the store (run in the restorer thread). Raises TaskClosed if closed meanwhile."""
        if self.state != TaskState.CREATED:
            raise RuntimeError(f"task {self.partition} cannot restore from state {self.state.value}")
        self.state = TaskState.RESTORING
        started = time.monotonic()
        consumer = Consumer(
            client_config(
                self.settings,
                **{
                    # The processors' group, to read its committed offset; this consumer never
                    # subscribes, so it never joins the group.
                    "group.id": self.settings.processor_group,
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "fetch.max.bytes": 64 * 1024 * 1024,
                    "fetch.wait.max.ms": 10,  # the end is what we wait for: do not let the broker sit
                },
            )
        )
        try:
            self.start_offset = self._stable_committed_offset(consumer)
            self.committed_offset = self.start_offset
            # What the previous owner left in the partition; recovery waits until it is applied.
            _, self.catch_up_offset = consumer.get_watermark_offsets(
                TopicPartition(self.topics.commands, self.partition), timeout=30, cached=False
            )
            store = self._open_store()
            store.track_transitions = True
            self.store = store
            self._restore_changelog(consumer, store)
            self.timers = TimerQueue()
            self.timers.load(store)
        finally:
            consumer.close()
        self.restore_ms = int((time.monotonic() - started) * 1000)

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise TaskClosed(f"task {self.partition} closed while restoring")

    def _stable_committed_offset(self, consumer: Consumer) -> int:
        """The group's committed offset, once stable: with read_committed, librdkafka asks for
        stable offsets (KIP-447), which waits for the previous owner's open transaction to end."""
        tp = TopicPartition(self.topics.commands, self.partition)
        while True:
            self._check_open()
            try:
                [committed] = consumer.committed([tp], timeout=10)
                break
            except KafkaException as e:
                log.info("task.waiting_for_stable_offset", partition=self.partition, error=str(e))
        if committed.offset >= 0:
            return committed.offset
        low, _ = consumer.get_watermark_offsets(tp, timeout=30, cached=False)
        return max(low, 0)

    def _open_store(self) -> PartitionStore:
        if self.state_dir is None:
            return PartitionStore(self.partition)
        self._lock = self.state_dir.lock_store(self.partition)
        if self._lock is None:
            # Another process in this directory still holds it (a stopped zombie, say): work
            # from memory rather than wait for it.
            log.warning(
                "task.store_locked",
                partition=self.partition,
                path=str(self.state_dir.store_path(self.partition)),
            )
            return PartitionStore(self.partition)
        return PartitionStore(self.partition, ChangelogStore(self.state_dir.store_path(self.partition)))

    def _restore_changelog(self, consumer: Consumer, store: PartitionStore) -> None:
        tp = TopicPartition(self.topics.changelog, self.partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=30, cached=False)
        topic_id = self.changelog_topic_id()
        resume = store.kv.resume_offset(
            self.partition,
            low=low,
            high=high,
            topic_id=topic_id,
            max_age_ms=self.settings.changelog_delete_retention_ms,
            now_ms=now_ms(),
            committed_input=self.start_offset,
        )
        if resume is not None:
            start = resume
        else:
            checkpoint = store.kv.checkpoint(self.partition)
            if checkpoint is not None and checkpoint.input_offset > self.start_offset:
                # Kafka lost a transaction after confirming its commit (seen when a broker
                # restarted right after): the store holds its writes, the log does not.
                log.warning(
                    "task.checkpoint_ahead_of_kafka",
                    partition=self.partition,
                    checkpoint_input_offset=checkpoint.input_offset,
                    committed_offset=self.start_offset,
                )
            elif checkpoint is not None:
                log.info("task.checkpoint_discarded", partition=self.partition, low=low, high=high)
            store.kv.wipe()
            start = low
        log.info(
            "task.restoring",
            partition=self.partition,
            from_offset=start,
            to_offset=high,
            store=str(store.kv.path or "memory"),
        )
        count, since_commit, last = 0, 0, start - 1
        next_report = time.monotonic() + PROGRESS_EVERY_S
        if high > start:
            tp.offset = start
            consumer.assign([tp])
            while True:
                self._check_open()
                msgs = poll_batch(consumer, 0.2, 5000)
                eof = False
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            eof = True
                            continue
                        raise KafkaException(err)
                    key = msg.key()
                    if key is None:
                        log.warning(
                            "task.changelog_record_without_key", partition=self.partition, offset=msg.offset()
                        )
                    else:
                        store.restore(key.decode(), msg.value())
                    last = _offset(msg)
                    count += 1
                    since_commit += 1
                if since_commit >= RESTORE_COMMIT_EVERY:
                    self._commit_restored(store, last + 1, topic_id)
                    since_commit = 0
                if time.monotonic() >= next_report:
                    log.info(
                        "task.restore_progress",
                        partition=self.partition,
                        records=count,
                        offset=last,
                        end=high,
                    )
                    next_report = time.monotonic() + PROGRESS_EVERY_S
                # The end is the high watermark (the position moves past commit markers too), or
                # the last stable offset when a dead owner's transaction is still open (EOF there;
                # its records will be aborted).
                if eof or last + 1 >= high or consumer.position([tp])[0].offset >= high:
                    break
        self._commit_restored(store, last + 1, topic_id)
        self.restored_records = count

    def _commit_restored(self, store: PartitionStore, next_offset: int, topic_id: str) -> None:
        # Restored state is the committed changelog's: it reflects the stable committed offset.
        store.kv.commit(
            {self.partition: next_offset},
            topic_id=topic_id,
            now_ms=now_ms(),
            input_offsets={self.partition: self.start_offset},
        )

    def changelog_topic_id(self) -> str:
        return f"{self.topics.changelog}/{self.settings.partitions}"

    # -- RUNNING --------------------------------------------------------------------------------

    def mark_running(self) -> None:
        if self.state != TaskState.RESTORING:
            raise RuntimeError(f"task {self.partition} cannot run from state {self.state.value}")
        self.state = TaskState.RUNNING

    def commit_store(self) -> None:
        """Kafka committed the batch: make the store's writes durable with the new checkpoint."""
        assert self.store is not None
        checkpoint = {self.partition: self.changelog_next} if self.changelog_next is not None else None
        self.store.kv.commit(
            checkpoint,
            topic_id=self.changelog_topic_id(),
            now_ms=now_ms(),
            input_offsets={self.partition: self.committed_offset},
        )
        self.store.trim_caches()

    def rollback_store(self) -> None:
        """The batch was aborted: back to the last committed state."""
        if self.store is not None:
            self.store.kv.rollback()
            self.store.drop_caches()
        self.changelog_next = None

    # -- CLOSED ---------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def request_close(self) -> None:
        """Ask a restoring task to stop (from another thread)."""
        self._closing.set()

    def close(self) -> None:
        self._closing.set()
        if self.state == TaskState.CLOSED:
            return
        self.state = TaskState.CLOSED
        if self.store is not None:
            try:
                self.store.kv.close()
            except Exception:  # noqa: BLE001 - closing anyway
                log.warning("task.store_close_failed", partition=self.partition, exc_info=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _offset(msg: Message) -> int:
    offset = msg.offset()
    assert offset is not None
    return offset
