"""The processor process: a consumer-group member on `commands` running its partition tasks.

Kafka is the distributed engine: partitions move between processors by the group protocol
(cooperative-sticky; dynamic membership unless an operator names the instance). Exactly-once is
Kafka's v2 (KIP-447): one transactional producer per processor carries the work of all its
partitions in one transaction — every running task's changelog writes, results, produced
commands and consumed offsets — whose offset commit is fenced by the group generation, so a
zombie cannot commit once the group has moved on. A loop commits what it applied unless the
transaction may stay open for the outcomes of the attempts it started (processor.open_transaction).

Outcomes from outside the state machine (attempts, timers) are appended to `commands` by the
invoker and the timer service themselves and applied when read back, so the loop blocks on the
consumer when idle and every commit carries as much as is waiting.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from kafka_core.errors import Disposition, classify, describe
from kafka_core.kafka import (
    check_record_limits_in_background,
    client_config,
    poll_batch,
    producer_config,
)
from kafka_core.metadata import MetadataView
from kafka_core.request_identity import load_request_signer
from kafka_core.supervision import KafkaLink, Unrecoverable, exit_code, fatal, join_problems
from processor import metrics, state_machine
from processor.apply import PoisonCommand, apply_records, write_changelog
from processor.decoding import CommandDecoder, decoder_for
from processor.effects import EffectProducer
from processor.http_server import HttpPortTaken, ProcessorHttp
from processor.invoker import AttemptRequest
from processor.invoker.service import InvokerService
from processor.open_transaction import OpenTransaction
from processor.state_dir import Slot, StateDirectory
from processor.state_machine import AbortAttempt, Action, InvokeAttempt, NotifyAttempt, ScheduleTimer
from processor.storage import PhaseChange
from processor.subscriptions import SubscriptionRunner
from processor.task import PartitionTask, TaskState
from processor.task_manager import TaskManager
from processor.tracing import Tracing, input_traceparent
from processor.transactions import TransactionalProducer, Wedged
from schemas.ids import InvocationId
from schemas.partitioner import routing_key
from schemas.records import Barrier, Command, InvocationOptions, InvocationPhase, InvocationStatus, Timer
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)

IDLE_POLL_S = 1.0
BUSY_POLL_S = 0.05
# A transaction begun this soon after a commit sends its offsets first (see _send_offsets_first).
OFFSETS_FIRST_WITHIN_S = 0.005
HELD_RETRY_S = 1.0  # a partition held for the schema registry is read again after this
GAUGES_EVERY_S = 1.0
TRACEPARENTS_KEPT = 100_000  # callers' trace contexts remembered for running invocations


DEFAULT_INACTIVITY_TIMEOUT_MS = 60_000  # Restate's, for invocations created without options


def now_ms() -> int:
    return int(time.time() * 1000)


class ProcessorService:
    def __init__(
        self,
        settings: Settings,
        *,
        metadata: MetadataView | None = None,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        state_dir: StateDirectory | None = None,
        effects: EffectProducer | None = None,
        invoker: InvokerService | None = None,
        decoder: CommandDecoder | None = None,
    ) -> None:
        # First: a bad request identity key file stops the processor before it touches anything.
        signer = load_request_signer(settings, "processor")
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.metadata = metadata or MetadataView(settings)
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self.state_dir = state_dir or StateDirectory(Path(settings.state_dir) / settings.topic_prefix)
        self.slot: Slot | None = None
        self.member = settings.processor_instance_id or ""
        self._stop = threading.Event()
        self.effects = effects or EffectProducer(settings)
        self.tracing = Tracing(settings)
        self._traceparents: dict[str, str | None] = {}  # invocation id -> its caller's, while it runs
        self.invoker = invoker or InvokerService(
            self.metadata.registry,
            self.effects,
            settings.invoker_concurrency_per_deployment,
            settings,
            self.tracing,
            signer,
        )
        self.tasks = TaskManager(settings, self.state_dir, self._on_task_closed)
        self.subscriptions = SubscriptionRunner(settings, self.metadata, self.transactional_id)
        self.http: ProcessorHttp | None = None
        self._timer_retries: queue.Queue[tuple[int, Timer]] = queue.Queue()
        self._barriers: dict[int, str] = {}  # partition -> nonce of the barrier we wait for
        self.decoder = decoder or decoder_for(settings)
        # Partitions paused at a record whose registry schema could not be fetched -> when to retry.
        self._held: dict[int, float] = {}
        self.consumer: Consumer | None = None
        self.txn: TransactionalProducer | None = None
        self.transactions = 0
        self._open: OpenTransaction | None = None
        self._committed_at = 0.0  # perf_counter when the last commit returned
        self._hold_s = settings.processor_commit_hold_ms / 1000
        self._linger_s = min(settings.processor_commit_linger_ms, settings.processor_commit_hold_ms) / 1000
        self._producer_generation = 0  # the producer generation the tasks were restored under
        self._gauges_due = 0.0
        self._consumer_link = KafkaLink("processor consumer")
        self._producer_link = KafkaLink("processor transactions")

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def transactional_id(self) -> str:
        # A processor restarted in its slot reuses the id: init_transactions() then aborts what
        # its crashed predecessor left open, at once instead of after the transaction timeout.
        assert self.slot is not None
        name = self.settings.processor_instance_id or self.slot.process_id
        return f"{self.settings.topic_prefix}-processor-{name}"

    def run(self) -> int:
        self.slot = self.state_dir.claim_slot()
        self.member = (
            self.settings.processor_instance_id or f"slot-{self.slot.number}-{self.slot.process_id[:8]}"
        )
        structlog.contextvars.bind_contextvars(processor=self.member)
        try:
            self.metadata.start()
            self.effects.start()
            self.invoker.start()
            self.tasks.start()
            self.subscriptions.start()
            self.http = ProcessorHttp(
                self.settings.processor_http_host,
                self.settings.processor_http_port,
                self.task_report,
                self.problem,
            ).start()
            self.txn = self._transactional_producer()
            self.consumer = self._consumer_factory(self._consumer_config())
            self.consumer.subscribe(
                [self.topics.commands],
                on_assign=self.tasks.on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info(
                "processor.started",
                group=self.settings.processor_group,
                instance=self.settings.processor_instance_id,
                transactional_id=self.transactional_id(),
                state_dir=str(self.state_dir.root),
                slot=self.slot.number,
            )
            while not self._stop.is_set():
                self.step()
            self._commit_held()
        except (Unrecoverable, HttpPortTaken) as e:
            fatal("processor", str(e))
        except Exception as e:
            log.exception("processor.crashed")
            fatal("processor", f"{type(e).__name__}: {e}")
        finally:
            self._shutdown()
        return exit_code()

    def _consumer_config(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "group.id": self.settings.processor_group,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": self.settings.processor_session_timeout_ms,
            "heartbeat.interval.ms": max(self.settings.processor_session_timeout_ms // 4, 100),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            **self._consumer_link.config(),
        }
        if self.settings.processor_instance_id:
            extra["group.instance.id"] = self.settings.processor_instance_id
        return client_config(self.settings, **extra)

    def _transactional_producer(self) -> TransactionalProducer:
        config = producer_config(
            self.settings,
            **{
                "transactional.id": self.transactional_id(),
                "transaction.timeout.ms": self.settings.processor_transaction_timeout_ms,
                "linger.ms": 0,
                # A transaction begun right after the previous commit is answered
                # CONCURRENT_TRANSACTIONS until the coordinator has written its markers; retry
                # within a millisecond, not after librdkafka's default 100 ms.
                "retry.backoff.ms": 1,
                "retry.backoff.max.ms": 100,
                **self._producer_link.config(),
            },
        )
        return TransactionalProducer(self._producer_factory, config, stopping=self._stop.is_set)

    @property
    def producer(self) -> Producer:
        assert self.txn is not None
        return self.txn.producer

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.txn is not None:
            self.txn.outage = True  # out of the group: a long stall or an outage
        # Its offsets could no longer commit; the producer is replaced before the next
        # transaction, which aborts what it had open.
        self._rollback_open(frozenset(tp.partition for tp in partitions))
        self.tasks.on_lost(consumer, partitions)

    def _shutdown(self) -> None:
        log.info("processor.stopping")
        self.subscriptions.stop()
        if self.consumer is not None:
            try:
                # A dynamic member leaves the group here: its partitions move at once. The
                # revocation callback closes the tasks and cancels their attempts.
                self.consumer.close()
            except Exception:  # noqa: BLE001 - stopping anyway
                log.warning("processor.consumer_close_failed", exc_info=True)
        self.tasks.stop()
        if self.http is not None:
            self.http.stop()
        self.invoker.stop()
        self.effects.stop()
        if self.txn is not None:
            self.txn.close()
        self.tracing.shutdown()
        self.metadata.stop()
        if self.slot is not None:
            self.slot.lock.release()
        log.info("processor.stopped")

    # -- what the HTTP server shows --------------------------------------------------------------

    def task_report(self) -> dict[str, Any]:
        """The owned partitions and their tasks' states (a snapshot; called from the HTTP thread)."""
        tasks = dict(self.tasks.tasks)  # a copy is atomic; the loop thread changes the dict
        return {
            "member": self.member,
            "group": self.settings.processor_group,
            "partitions": sorted(tasks),
            "tasks": [
                {
                    "partition": p,
                    "state": t.state.name,
                    "committed_offset": t.committed_offset,
                    "restored_records": t.restored_records,
                    "restore_ms": t.restore_ms,
                }
                for p, t in sorted(tasks.items())
            ],
        }

    def problem(self) -> str | None:
        """None while this processor can work, else why not (its `/health`)."""
        return join_problems(
            self.metadata.health(),
            self._consumer_link.problem(),
            self._producer_link.problem(),
            None if self.invoker.is_alive() else "the invoker's event loop stopped",
            None if self.tasks.restorer_alive() else "the restorer thread stopped",
        )

    # -- the loop ---------------------------------------------------------------------------------

    def step(self) -> None:
        assert self.consumer is not None
        messages = poll_batch(self.consumer, self._poll_timeout_s())
        self._release_held()
        self._restart_tasks_if_replaced()
        for task in self.tasks.take_restored():
            self._resume(task)
        self._fire_timers()
        if messages:
            self.process(messages)
        self._commit_if_due()
        self._recover_caught_up()
        self._update_gauges()
        self._check_components()

    def _update_gauges(self) -> None:
        """Consumer lag and task states, at most once a second (local reads: no broker round trip)."""
        now = time.monotonic()
        if now < self._gauges_due:
            return
        self._gauges_due = now + GAUGES_EVERY_S
        assert self.consumer is not None
        tasks = dict(self.tasks.tasks)
        for state in TaskState:
            metrics.TASKS.labels(state.value).set(sum(t.state == state for t in tasks.values()))
        running = {p: t for p, t in tasks.items() if t.state == TaskState.RUNNING}
        for task in running.values():
            assert task.store is not None
            if task.store.backing_off:  # a retry may have come due: backing-off becomes running
                self._publish_counts(task)
        if not running:
            return
        try:
            positions = self.consumer.position([TopicPartition(self.topics.commands, p) for p in running])
            for tp in positions:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                # No position before the first record is consumed: the task's committed offset is
                # where consuming resumed.
                position = tp.offset if tp.offset >= 0 else running[tp.partition].committed_offset
                if high >= 0:
                    metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, high - position))
        except KafkaException as e:
            log.debug("processor.lag_unknown", error=describe(e))

    @staticmethod
    def _publish_counts(task: PartitionTask) -> None:
        """The partition's invocations by status and target, as committed (read from counts the
        store keeps at each write: no scan of the invocations)."""
        assert task.store is not None
        metrics.INVOCATIONS_BY_STATE.update(task.partition, task.store.invocation_counts(now_ms()))

    def _poll_timeout_s(self) -> float:
        if self._open is not None:  # held: until it may hold no longer
            return min(self._timers_poll_timeout_s(), max(0.0, self._open_remaining_s()))
        return self._timers_poll_timeout_s()

    def _open_remaining_s(self) -> float:
        assert self._open is not None
        return self._open.remaining_s(self._hold_s, self._linger_s, now_ms())

    def _timers_poll_timeout_s(self) -> float:
        if self.tasks.restoring() or any(t.recovery_pending for t in self.tasks.running().values()):
            return BUSY_POLL_S
        if not self._timer_retries.empty():
            return BUSY_POLL_S
        due = [d for t in self.tasks.running().values() if (d := t.timers.next_due_ms()) is not None]
        if not due:
            return IDLE_POLL_S
        return min(IDLE_POLL_S, max(0.0, (min(due) - now_ms()) / 1000))

    def _check_components(self) -> None:
        if not self.invoker.is_alive():
            raise Unrecoverable("the invoker's event loop stopped")
        if not self.tasks.restorer_alive():
            raise Unrecoverable("the restorer thread stopped")

    def process(self, messages: list[Message]) -> None:
        """Apply a batch of every partition's records in the open transaction (begun if there is
        none), then commit it unless it may wait for the outcomes of the attempts it started."""
        assert self.consumer is not None and self.txn is not None
        by_partition: dict[int, list[Message]] = defaultdict(list)
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise Unrecoverable(f"consumer: {err.str()}")
                log.warning("processor.consume_error", error=err.str())
                continue
            p = msg.partition()
            assert p is not None
            by_partition[p].append(msg)
        if self._restart_tasks_if_replaced():
            return  # every task restores again and re-reads from its committed offset
        running = self.tasks.running()
        batch = {p: (running[p], msgs) for p, msgs in by_partition.items() if p in running}
        self._hold_undecodable_yet(batch)
        if not batch:
            return
        try:
            fresh = self._open is None
            if self._open is None:
                self._open = OpenTransaction()
            for task, _ in batch.values():
                self._open.join(task)  # first: whatever fails from here reads the batch again
            if fresh:
                self.txn.begin()
                if time.perf_counter() - self._committed_at < OFFSETS_FIRST_WITHIN_S:
                    self._send_offsets_first(batch)
            applied = {
                p: apply_records(
                    task, msgs, self.producer, self._barriers.get(p), self.decoder.decode, self._open.write
                )
                for p, (task, msgs) in batch.items()
            }
            for p, (task, msgs) in batch.items():
                if applied[p].barrier_seen:
                    self._barriers.pop(p, None)  # caught up: recovery may start
                self._open.add(task, _next_offset(msgs), len(msgs), applied[p])
            # Attempts start while the transaction is open: the state they are built from is a
            # pure function of the log, so if the batch is aborted and applied again it is the
            # same state, and the attempt's outcome is valid for it (at worst, after an abort, an
            # attempt runs twice and the second outcome is stale: the state machine drops it).
            for p, (task, _) in batch.items():
                for action in applied[p].actions:
                    if isinstance(action, InvokeAttempt | NotifyAttempt | AbortAttempt):
                        self._run_action(task, action)
            if self._open_remaining_s() <= 0:
                self._commit_open()
        except PoisonCommand as e:
            task = batch[e.partition][0]
            self._abort_open(f"command {e.partition}@{e.offset} failed")
            task.poison[e.offset] = e.reason
        except (KafkaException, Wedged) as e:
            self._on_kafka_error(e)

    def _commit_if_due(self) -> None:
        """Commit a held transaction once it may hold no longer."""
        if self._open is None or self._open_remaining_s() > 0:
            return
        try:
            self._commit_open()
        except (KafkaException, Wedged) as e:
            self._on_kafka_error(e)

    def _send_offsets_first(self, batch: dict[int, tuple[PartitionTask, list[Message]]]) -> None:
        """Right after a commit the coordinator is still writing its markers and answers the next
        transaction's first request CONCURRENT_TRANSACTIONS: librdkafka retries a produce's
        AddPartitionsToTxn only after a fixed 20 ms, but the offsets' AddOffsetsToTxn after
        `retry.backoff.ms` (1 ms here). Sending the offsets first makes that wait the short one;
        they are sent again at commit only if more was applied since."""
        assert self.consumer is not None and self.txn is not None and self._open is not None
        offsets = {p: _next_offset(msgs) for p, (_, msgs) in batch.items()}
        self.txn.send_offsets(self._input_offsets(offsets), self.consumer.consumer_group_metadata())
        self._open.offsets_sent = offsets

    def _input_offsets(self, offsets: dict[int, int]) -> list[TopicPartition]:
        return [TopicPartition(self.topics.commands, p, o) for p, o in offsets.items()]

    def _commit_held(self) -> None:
        """On a clean stop, what is held commits (after a crash it is left to be aborted: it may
        hold half a batch)."""
        if self._open is None:
            return
        try:
            self._commit_open()
        except (KafkaException, Wedged) as e:
            log.warning("processor.final_commit_failed", error=describe(e))
            self._rollback_open()

    def _commit_open(self) -> None:
        assert self.consumer is not None and self.txn is not None and self._open is not None
        open_txn = self._open
        for p, latest in open_txn.changelog.items():
            write_changelog(open_txn.tasks[p], list(latest.items()), self.producer)
        if open_txn.offsets_sent != open_txn.next_offsets:
            self.txn.send_offsets(
                self._input_offsets(open_txn.next_offsets), self.consumer.consumer_group_metadata()
            )
        self.txn.commit()
        self._committed_at = time.perf_counter()
        self._open = None
        self.transactions += 1
        elapsed = time.perf_counter() - open_txn.began
        metrics.COMMIT_SECONDS.observe(elapsed)
        metrics.BATCH_RECORDS.observe(open_txn.records)
        self.producer.poll(0)  # delivery reports not yet served carry the changelog offsets
        for p, task in open_txn.tasks.items():
            task.committed_offset = open_txn.next_offsets[p]
            task.commit_store()
            assert task.store is not None
            changes = task.store.take_transitions()
            metrics.count_transitions(changes)
            if task.store.counts_changed:
                self._publish_counts(task)
            if self.tracing.enabled:
                self._trace_completions(task, changes)
        log.debug(
            "processor.committed",
            partitions=len(open_txn.tasks),
            records=open_txn.records,
            ms=round(elapsed * 1000, 2),
        )
        for p, timers in open_txn.after_commit.items():
            for action in timers:
                self._run_action(open_txn.tasks[p], action)

    def _hold_undecodable_yet(self, batch: dict[int, tuple[PartitionTask, list[Message]]]) -> None:
        """Fetch the registry schemas the batch needs before its transaction. A partition whose
        record needs a schema the registry cannot give now is cut before that record and paused;
        `_release_held` reads it again from there later (the record is neither lost nor
        dead-lettered for an outage; other partitions go on)."""
        self.decoder.new_batch()
        for p in list(batch):
            task, msgs = batch[p]
            if p in self._held:  # fetched before the pause took effect: read again on release
                del batch[p]
                continue
            stop = self.decoder.prefetch(msgs)
            if stop is None:
                continue
            assert self.consumer is not None
            offset = msgs[stop].offset()
            self._held[p] = time.monotonic() + HELD_RETRY_S
            self.consumer.pause([TopicPartition(self.topics.commands, p)])
            log.warning(
                "processor.partition_held", partition=p, offset=offset, why="schema registry unavailable"
            )
            if stop == 0:
                del batch[p]
            else:
                batch[p] = (task, msgs[:stop])

    def _release_held(self) -> None:
        """Resume held partitions from their committed offset (the held record) once due."""
        assert self.consumer is not None
        now = time.monotonic()
        for p, due in list(self._held.items()):
            if now < due:
                continue
            del self._held[p]
            task = self.tasks.running().get(p)
            if task is None:
                continue  # no longer ours or restoring: the task manager resumes it
            held_from = self._open.next_offsets.get(p) if self._open is not None else None
            tp = TopicPartition(
                self.topics.commands, p, task.committed_offset if held_from is None else held_from
            )
            try:
                self.consumer.seek(tp)
                self.consumer.resume([tp])
            except KafkaException as e:
                log.warning("processor.resume_failed", partition=p, error=describe(e))
                self._held[p] = now + HELD_RETRY_S

    def _restart_tasks_if_replaced(self) -> bool:
        """After an outage the producer is replaced before it is used again; after any
        replacement every task is restored again. Kafka has been seen to lose a transaction whose
        commit it had confirmed when a broker restarted right after: state this processor holds
        in memory (and checkpointed) may be ahead of the log. Restoring re-reads the stable
        committed offset and rebuilds a store that is ahead of it."""
        assert self.txn is not None and self.consumer is not None
        if self.txn.outage:
            self._rollback_open()  # the new producer's init_transactions aborts it
        self.txn.replace_if_outage()
        if self.txn.generation == self._producer_generation:
            return False
        self._producer_generation = self.txn.generation
        self.tasks.restart_all(self.consumer, "the transactional producer was replaced")
        return True

    def _on_kafka_error(self, e: KafkaException | Wedged) -> None:
        assert self.txn is not None
        disposition = Disposition.FATAL if isinstance(e, Wedged) else classify(e)
        log.warning("processor.transaction_failed", error=describe(e), disposition=disposition.value)
        if disposition in (Disposition.FENCED, Disposition.FATAL):
            # Our own id (unique per processor): fenced means a transaction of ours timed out
            # (we were stalled), so a new producer with the id goes on; see processor.transactions.
            self._rollback_open()
            self.txn.replace(describe(e))
            return
        # Abortable, retriable or a rebalance in progress: abort, roll back and re-read; if the
        # partitions were taken from us, the rebalance callbacks close their tasks.
        self._abort_open(disposition.value)

    def _abort_open(self, why: str, leaving: frozenset[int] = frozenset()) -> None:
        assert self.txn is not None
        if self._open is None:
            return
        partitions = sorted(self._open.tasks)
        try:
            self.txn.abort()
        except (KafkaException, Wedged) as e:
            log.warning("processor.abort_failed", error=describe(e))
            self._rollback_open(leaving)
            self.txn.replace(f"abort failed: {describe(e)}")
            return
        log.info("processor.aborted", why=why, partitions=partitions)
        self._rollback_open(leaving)

    def _rollback_open(self, leaving: frozenset[int] = frozenset()) -> None:
        """Back to the last commit: stores rolled back, the open transaction's records read again
        (but from partitions `leaving` us)."""
        assert self.consumer is not None
        open_txn, self._open = self._open, None
        if open_txn is None:
            return
        for p, task in open_txn.tasks.items():
            task.rollback_store()
            if p not in leaving and self.tasks.tasks.get(p) is task:
                try:
                    self.consumer.seek(TopicPartition(self.topics.commands, p, task.committed_offset))
                except KafkaException as e:
                    log.warning("processor.seek_failed", partition=p, error=describe(e))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A task leaves only with nothing of it uncommitted: an open transaction holding one is
        aborted (its records are the next owner's to apply; the others are read again here)."""
        revoked = frozenset(tp.partition for tp in partitions)
        if self._open is not None and revoked & self._open.tasks.keys():
            self._abort_open("partitions revoked", leaving=revoked)
        self.tasks.on_revoke(consumer, partitions)

    # -- tasks ----------------------------------------------------------------------------------

    def _resume(self, task: PartitionTask) -> None:
        assert self.consumer is not None and task.store is not None
        tp = TopicPartition(self.topics.commands, task.partition, task.start_offset)
        try:
            self.consumer.seek(tp)
            self.consumer.resume([tp])
        except KafkaException as e:  # e.g. "Erroneous state" while the partition is being moved
            self.tasks.restore_again(task, describe(e))
            return
        task.mark_running()
        metrics.RESTORE_SECONDS.labels(str(task.partition)).set(task.restore_ms / 1000)
        self._publish_counts(task)
        if self.settings.recovery_barrier:
            # Emulator workaround (kept only for `--broker local`): its consumer position does not
            # advance past an aborted batch at a partition's end, so "caught up" is detected by
            # reading back a barrier we append ourselves.
            nonce = uuid.uuid4().hex
            self._barriers[task.partition] = nonce
            barrier = Command(timestamp_ms=now_ms(), body=Barrier(owner=self.member, nonce=nonce))
            self.effects.append(task.partition, b"", barrier)
        log.info(
            "task.running",
            partition=task.partition,
            from_offset=task.start_offset,
            restored_records=task.restored_records,
            restore_ms=task.restore_ms,
            to_resume=len(task.store.invoked()),
        )

    def _recover_caught_up(self) -> None:
        """Restart what the previous owner had running, once its last effects are applied (the
        consumer has read everything that was in the partition when the task started)."""
        for p, task in self.tasks.running().items():
            if not task.recovery_pending or not self._caught_up(p, task):
                continue
            task.recovery_pending = False
            assert task.store is not None
            # Attempts this owner started meanwhile (for commands applied before catching up) are
            # not started twice.
            recovery = [
                a
                for a in state_machine.recovery_actions(task.store)
                if not (isinstance(a, InvokeAttempt) and (a.invocation_id, a.attempt) in task.started)
            ]
            task.started.clear()
            if recovery:
                log.info("task.recovering", partition=p, invocations=len(recovery))
            for action in recovery:
                self._run_action(task, action)

    def _caught_up(self, partition: int, task: PartitionTask) -> bool:
        if self.settings.recovery_barrier:
            return partition not in self._barriers
        if task.catch_up_offset <= task.start_offset:
            return True
        assert self.consumer is not None
        [tp] = self.consumer.position([TopicPartition(self.topics.commands, partition)])
        return tp.offset >= task.catch_up_offset

    def _on_task_closed(self, task: PartitionTask) -> None:
        self.invoker.cancel_partition(task.partition)
        self._barriers.pop(task.partition, None)
        self._held.pop(task.partition, None)
        metrics.forget_partition(task.partition)

    # -- actions --------------------------------------------------------------------------------

    def _run_action(self, task: PartitionTask, action: Action) -> None:
        try:
            if isinstance(action, ScheduleTimer):
                task.timers.schedule(action.timer)
            elif isinstance(action, InvokeAttempt):
                self._invoke(task, action)
            elif isinstance(action, NotifyAttempt):
                self.invoker.notify(task.partition, action)
            elif isinstance(action, AbortAttempt):
                self.invoker.abort(task.partition, action.invocation_id, action.attempt)
        except Exception:  # noqa: BLE001 - one bad action must not stop the partition
            log.exception("processor.action_failed", partition=task.partition, action=repr(action))

    def _invoke(self, task: PartitionTask, action: InvokeAttempt) -> None:
        assert task.store is not None
        status = task.store.status(action.invocation_id)
        if status is None or status.phase != InvocationPhase.INVOKED or status.attempt != action.attempt:
            return  # superseded in the same batch (e.g. its outcome was already in the log)
        inv = InvocationId.parse(action.invocation_id)
        key = status.target.key
        options = status.options or InvocationOptions()
        request = AttemptRequest(
            invocation_id=action.invocation_id,
            invocation_id_raw=inv.to_bytes(),
            service=status.target.service,
            handler=status.target.handler,
            key=key,
            journal=[e.frame for e in task.store.journal(action.invocation_id)],
            # Eager state: the object's whole state travels in the StartMessage.
            state=task.store.state_of(status.target.service, key) if key is not None else {},
            retry_count_since_last_stored_entry=status.retry_count_since_last_stored_entry,
            duration_since_last_stored_entry_ms=max(0, now_ms() - status.last_stored_entry_at_ms),
            random_seed=int.from_bytes(_seed_id(status, inv).to_bytes()[-8:], "big"),
            abort_timeout_s=options.abort_timeout_ms / 1000 if options.abort_timeout_ms else None,
            inactivity_timeout_s=(options.inactivity_timeout_ms or DEFAULT_INACTIVITY_TIMEOUT_MS) / 1000,
            traceparent=self._traceparent(task, action.invocation_id) if self.tracing.enabled else None,
        )
        if task.recovery_pending:
            task.started.add((action.invocation_id, action.attempt))
        self.invoker.invoke(task.partition, action, request, status.deployment_id, status.target.service)

    # -- tracing --------------------------------------------------------------------------------

    def _traceparent(self, task: PartitionTask, invocation_id: str) -> str | None:
        """The `traceparent` of the invocation span's parent: the ingress request's span (the
        status' span_context), else the caller's, from the input headers (journal entry 0: an
        invocation produced directly, or by an ingress without tracing)."""
        if invocation_id in self._traceparents:
            return self._traceparents[invocation_id]
        assert task.store is not None
        status = task.store.status(invocation_id)
        found = status.span_context if status is not None else None
        if found is None:
            journal = task.store.journal(invocation_id)
            found = input_traceparent(journal[0].frame) if journal else None
        if len(self._traceparents) >= TRACEPARENTS_KEPT:
            self._traceparents.clear()
        self._traceparents[invocation_id] = found
        return found

    def _trace_completions(self, task: PartitionTask, changes: list[PhaseChange]) -> None:
        assert task.store is not None
        for change in changes:
            if change.phase != InvocationPhase.COMPLETED:
                continue
            traceparent = self._traceparent(task, change.invocation_id)
            self._traceparents.pop(change.invocation_id, None)
            target = f"{change.service}/{change.handler}"
            self.tracing.invocation_completed(
                change.invocation_id, traceparent, target, change.created_at_ms, None, change.failure
            )

    def _fire_timers(self) -> None:
        """Due timers become TimerFired commands, appended to their partition (no transaction:
        firing twice is harmless, the state machine applies a timer once)."""
        running = self.tasks.running()
        while True:
            try:
                p, timer = self._timer_retries.get_nowait()
            except queue.Empty:
                break
            if p in running:
                running[p].timers.schedule(timer)
        now = now_ms()
        for p, task in running.items():
            assert task.store is not None
            for fired in task.timers.due(now, task.store):
                key = routing_key(InvocationId.parse(fired.invocation_id).partition_key)
                fut = self.effects.append(p, key, Command(timestamp_ms=now, body=fired))
                timer = Timer(
                    invocation_id=fired.invocation_id,
                    completion_id=fired.completion_id,
                    wake_up_at_ms=fired.wake_up_at_ms,
                )

                def retry(f: Any, p: int = p, timer: Timer = timer) -> None:
                    if f.exception() is not None:
                        log.warning("timer.append_failed", partition=p, error=str(f.exception()))
                        self._timer_retries.put((p, timer))

                fut.add_done_callback(retry)


def _seed_id(status: InvocationStatus, inv: InvocationId) -> InvocationId:
    """Whose id seeds the SDK's random: the original's for a restart-as-new, else its own."""
    return InvocationId.parse(status.seed_invocation_id) if status.seed_invocation_id else inv


def _next_offset(msgs: list[Message]) -> int:
    offset = msgs[-1].offset()
    assert offset is not None
    return offset + 1


def run_processor(settings: Settings) -> int:
    service = ProcessorService(settings)
    # The topics it writes records of up to KINVOKE_MAX_RECORD_BYTES to, when someone else made them.
    topics = Topics(settings.topic_prefix)
    check_record_limits_in_background(
        settings, [topics.commands, topics.changelog, topics.results, topics.commands_dlq]
    )
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    return service.run()
