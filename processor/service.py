"""The processor process: a consumer-group member on `commands` running its partitions.

Kafka is the distributed engine: partitions move between processors by the group protocol;
a processor that gets a partition rebuilds its state from the changelog and goes on.
The main thread owns the consumer and every partition store. Attempts against deployments run on
an asyncio loop in a second thread; their outcomes come back through a queue and are written to
`commands` in the partition's next transaction, so they reach the state machine like any input.
"""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
import time
from collections import defaultdict
from concurrent.futures import Future

import structlog
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from kafka_core.kafka import client_config, poll_batch
from kafka_core.metadata import MetadataView
from processor.invoker import AttemptRequest, AttemptResult, Failed, Invoker
from processor.invoker.deployments import deployment_for
from processor.partition import PartitionProcessor, PoisonCommand
from processor.state_machine import InvokeAttempt
from processor.subscriptions import SubscriptionRunner
from schemas.ids import InvocationId
from schemas.partitioner import partition_of
from schemas.records import AttemptEnded, Command, ResolvedCallee
from schemas.service_protocol import Frame, MessageType, decode_message
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


class ProcessorService:
    def __init__(self, settings: Settings, metadata: MetadataView | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.metadata = metadata or MetadataView(settings)
        self.partitions: dict[int, PartitionProcessor] = {}
        self.effects: queue.Queue[tuple[int, Command]] = queue.Queue()
        self.in_flight: dict[tuple[str, int], Future[None]] = {}
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="invoker", daemon=True)
        self._invoker: Invoker | None = None
        self.subscriptions = SubscriptionRunner(settings, self.metadata)
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": settings.processor_group,
                    **(
                        {"group.instance.id": settings.processor_instance_id}
                        if settings.processor_instance_id
                        else {}
                    ),
                    "session.timeout.ms": settings.processor_session_timeout_ms,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                    "enable.partition.eof": False,
                },
            )
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.metadata.start()
        self.subscriptions.start()
        self._loop_thread.start()
        self._invoker = asyncio.run_coroutine_threadsafe(self._make_invoker(), self._loop).result()
        self.consumer.subscribe([self.topics.commands], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "processor.started",
            group=self.settings.processor_group,
            instance=self.settings.processor_instance_id,
            topic=self.topics.commands,
        )
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._shutdown()

    async def _make_invoker(self) -> Invoker:
        return Invoker()

    def _shutdown(self) -> None:
        log.info("processor.stopping")
        try:
            # A static member does not leave the group on close: restarted with the same
            # instance id it takes its partitions back without a rebalance.
            self.consumer.close()
        except Exception:
            log.warning("processor.consumer_close_failed", exc_info=True)
        for pp in self.partitions.values():
            pp.close()
        self.partitions.clear()
        if self._invoker is not None:
            asyncio.run_coroutine_threadsafe(self._invoker.aclose(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(5)
        self.subscriptions.stop()
        self.metadata.stop()

    # -- rebalancing ------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            pp = PartitionProcessor(
                self.settings, tp.partition, self.consumer, self.settings.processor_instance_id or "processor"
            )
            pp.open()
            self.partitions[tp.partition] = pp
        log.info("processor.assigned", partitions=sorted(self.partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            pp = self.partitions.pop(tp.partition, None)
            if pp is not None:
                pp.close()
            for key, fut in list(self.in_flight.items()):
                if self._partition_of(key[0]) == tp.partition:
                    fut.cancel()
                    self.in_flight.pop(key, None)
        log.info("processor.revoked", partitions=[tp.partition for tp in partitions])

    def _partition_of(self, invocation_id: str) -> int:
        return partition_of(InvocationId.parse(invocation_id).partition_key, self.settings.partitions)

    # -- the loop ---------------------------------------------------------------------------------

    def _step(self) -> None:
        try:
            messages = poll_batch(self.consumer, self.settings.processor_poll_interval_s)
        except KafkaException:
            log.exception("processor.consume_failed")
            time.sleep(0.5)
            return
        by_partition: dict[int, list[Message]] = defaultdict(list)
        for msg in messages:
            if msg.error() is not None:
                log.warning("processor.consume_error", error=str(msg.error()))
                continue
            by_partition[msg.partition()].append(msg)
        effects: dict[int, list[Command]] = defaultdict(list)
        while True:
            try:
                p, cmd = self.effects.get_nowait()
            except queue.Empty:
                break
            effects[p].append(cmd)
        now = now_ms()
        for p, pp in self.partitions.items():
            for fired in pp.due_timers(now):
                effects[p].append(Command(timestamp_ms=now, body=fired))
        for p in set(by_partition) | set(effects):
            pp = self.partitions.get(p)
            if pp is None:
                continue  # revoked meanwhile: the new owner re-runs what was in flight
            started = time.perf_counter()
            try:
                actions = pp.process(by_partition.get(p, []), effects.get(p, []))
            except PoisonCommand as e:
                # The store may hold half of that step: rebuild it, then dead-letter the command.
                self._reopen(p, poison={**pp.poison, e.offset: e.reason})
                continue
            except Exception:
                log.exception("partition.batch_failed", partition=p)
                self._reopen(p, poison=pp.poison)
                continue
            log.debug(
                "partition.batch",
                partition=p,
                commands=len(by_partition.get(p, [])),
                effects=len(effects.get(p, [])),
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
            for action in actions:
                self._dispatch(pp, action)

    def _reopen(self, partition: int, poison: dict[int, str]) -> None:
        """After a failed transaction the in-memory store may be ahead of the log: rebuild it and
        re-read `commands` from the committed offset (effects of the aborted batch are re-run by
        recovery, as after a crash)."""
        old = self.partitions.pop(partition, None)
        if old is not None:
            old.close()
        committed = self.consumer.committed([TopicPartition(self.topics.commands, partition)], timeout=10)
        pp = PartitionProcessor(
            self.settings, partition, self.consumer, self.settings.processor_instance_id or "processor"
        )
        pp.poison = poison
        pp.open()
        self.partitions[partition] = pp
        offset = committed[0].offset if committed and committed[0].offset >= 0 else 0
        self.consumer.seek(TopicPartition(self.topics.commands, partition, offset))

    # -- invoking ---------------------------------------------------------------------------------

    def _resolve_callees(self, entries: list[bytes]) -> list[ResolvedCallee]:
        """Registry answers for the attempt's calls, recorded in the effect: the state machine
        then needs no registry, and replaying the log gives the same children."""
        registry = self.metadata.registry()
        out: list[ResolvedCallee] = []
        for raw in entries:
            frame = Frame.parse(raw)
            if frame.type not in (MessageType.CALL_COMMAND, MessageType.ONE_WAY_CALL_COMMAND):
                continue
            msg = decode_message(frame)
            svc = registry.service(msg.service_name)
            handler = registry.handler(msg.service_name, msg.handler_name)
            if svc is None:
                out.append(ResolvedCallee(error=f"service '{msg.service_name}' not found"))
            elif handler is None:
                out.append(
                    ResolvedCallee(error=f"handler '{msg.handler_name}' of '{msg.service_name}' not found")
                )
            else:
                out.append(ResolvedCallee(service_ty=svc.service_type, handler_ty=handler.handler_type))
        return out

    def _dispatch(self, pp: PartitionProcessor, action: InvokeAttempt) -> None:
        key = (action.invocation_id, action.attempt)
        if key in self.in_flight:
            return
        status = pp.store.status(action.invocation_id)
        if status is None:
            return
        journal = [e.frame for e in pp.store.journal(action.invocation_id)]
        inv = InvocationId.parse(action.invocation_id)
        request = AttemptRequest(
            invocation_id=action.invocation_id,
            invocation_id_raw=inv.to_bytes(),
            service=status.target.service,
            handler=status.target.handler,
            key=status.target.key,
            journal=journal,
            # Eager state: the object's whole state travels in the StartMessage.
            state=pp.store.state_of(status.target.service, status.target.key) if status.target.key else {},
            retry_count_since_last_stored_entry=status.retry_count_since_last_stored_entry,
            duration_since_last_stored_entry_ms=max(0, now_ms() - status.last_stored_entry_at_ms),
            random_seed=int.from_bytes(inv.to_bytes()[-8:], "big"),
        )
        fut = asyncio.run_coroutine_threadsafe(
            self._attempt(pp.partition, action, status.deployment_id, status.target.service, request),
            self._loop,
        )
        self.in_flight[key] = fut
        fut.add_done_callback(lambda _f, k=key: self.in_flight.pop(k, None))

    async def _attempt(
        self, partition: int, action: InvokeAttempt, pinned: str | None, service: str, request: AttemptRequest
    ) -> None:
        log.debug("attempt.start", invocation_id=request.invocation_id, attempt=action.attempt)
        delay = (action.not_before_ms - now_ms()) / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        deployment = deployment_for(self.metadata.registry(), service, pinned)
        if deployment is None:
            result = AttemptResult(
                new_entries=[],
                outcome=Failed(code=500, message=f"no deployment registered for service '{service}'"),
                protocol_version=0,
                server=None,
            )
            deployment_id = pinned or ""
        else:
            deployment_id, target = deployment
            assert self._invoker is not None
            result = await self._invoker.run_attempt(target, request)
        log.info(
            "attempt.ended",
            invocation_id=request.invocation_id,
            attempt=action.attempt,
            outcome=type(result.outcome).__name__,
            new_entries=len(result.new_entries),
        )
        effect = AttemptEnded(
            callees=self._resolve_callees(result.new_entries),
            invocation_id=request.invocation_id,
            attempt=action.attempt,
            deployment_id=deployment_id,
            protocol_version=result.protocol_version,
            server=result.server,
            new_entries=list(result.new_entries),
            outcome=result.outcome,
        )
        self.effects.put((partition, Command(timestamp_ms=now_ms(), body=effect)))


def run_processor(settings: Settings) -> None:
    service = ProcessorService(settings)
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    service.run()
