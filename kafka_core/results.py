"""Waiting for answers from the processors: one tail of the `results` topic per process
(ingress, admin).

The listener starts at the end of `results` before the ingress accepts requests, and a waiter
registers before its Invoke is produced, so no result can slip past. The tail runs supervised: a
crashed consumer is replaced by one that resumes after the last record consumed (not at the end),
so results written meanwhile still reach their waiters. If the supervisor gives the tail up, every
waiter (and every later registration) fails with `Unavailable` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from kafka_core import supervision
from kafka_core.errors import describe_error
from kafka_core.kafka import partition_offset, poll_batch, tail_consumer
from kafka_core.supervision import (
    KafkaLink,
    SupervisedThread,
    Unavailable,
    join_problems,
    partitions_of,
    retry_until_stopped,
)
from schemas import codec
from schemas.records import (
    InvocationAccepted,
    InvocationResult,
    ManageAnswer,
    OperationAnswer,
    OutputNotReady,
)
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


Answer = InvocationResult | InvocationAccepted | OutputNotReady | ManageAnswer | OperationAnswer
_ANSWERS: dict[str, type[Answer]] = {
    t.avro_name: t
    for t in (InvocationResult, InvocationAccepted, OutputNotReady, ManageAnswer, OperationAnswer)
}


def _decode(data: bytes) -> Answer:
    name = codec.schema_name_of(data)
    if name not in _ANSWERS:
        raise codec.DecodeError(f"{name} is not a record of the results topic")
    return _ANSWERS[name].decode(data)


_ACKS: tuple[type[Answer], ...] = (InvocationAccepted, OutputNotReady, ManageAnswer, OperationAnswer)
_AckWaiter = tuple[asyncio.Future[Any], tuple[type[Answer], ...]]


class ResultsListener:
    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._loop = loop
        self._topic = Topics(settings.topic_prefix).results
        self._waiters: dict[str, list[asyncio.Future[InvocationResult]]] = defaultdict(list)
        # invocation id -> (waiter, the answer types it waits for)
        self._ack_waiters: dict[str, list[tuple[asyncio.Future[Any], tuple[type[Answer], ...]]]] = (
            defaultdict(list)
        )
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._positions: dict[int, int] = {}  # partition -> next offset to consume
        self._link = KafkaLink("results tail")
        self._gone: str | None = None  # why waiting is pointless: the tail was given up
        self._supervisor = SupervisedThread("results", self._run, on_fatal=self._give_up, auto_up=False)

    def start(self, timeout_s: float = 30.0) -> None:
        self._supervisor.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(
                f"results listener did not start within {timeout_s}s ({self._supervisor.health()})"
            )

    def stop(self) -> None:
        self._supervisor.stop(5.0)

    def health(self) -> str | None:
        return join_problems(self._supervisor.health(), self._link.problem())

    def positions(self) -> dict[int, int]:
        """Next offset to consume, per partition (where a restarted tail resumes)."""
        with self._lock:
            return dict(self._positions)

    def register(self, invocation_id: str) -> asyncio.Future[InvocationResult]:
        fut: asyncio.Future[InvocationResult] = self._loop.create_future()
        with self._lock:
            if self._gone is None:
                self._waiters[invocation_id].append(fut)
                return fut
        fut.set_exception(Unavailable(self._gone))
        return fut

    def register_ack(self, invocation_id: str, *kinds: type[Answer]) -> asyncio.Future[Any]:
        """A waiter for answers that are not results (InvocationAccepted, OutputNotReady,
        ManageAnswer) of the given `kinds` only: several requests about one invocation (an attach
        and a cancel, say) each get their own kind of answer. No kinds: any of them."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        with self._lock:
            if self._gone is None:
                self._ack_waiters[invocation_id].append((fut, kinds or _ACKS))
                return fut
        fut.set_exception(Unavailable(self._gone))
        return fut

    def unregister(self, invocation_id: str, fut: asyncio.Future[Any]) -> None:
        with self._lock:
            results = self._waiters.get(invocation_id)
            if results and fut in results:
                results.remove(fut)
                if not results:
                    del self._waiters[invocation_id]
            acks = self._ack_waiters.get(invocation_id)
            if acks:
                acks[:] = [(f, k) for f, k in acks if f is not fut]
                if not acks:
                    del self._ack_waiters[invocation_id]
        if fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: an abandoned failed waiter is not "never retrieved"

    def _deliver(self, record: Answer) -> None:
        with self._lock:
            if isinstance(record, InvocationResult):
                waiters = self._waiters.pop(record.invocation_id, [])
            else:
                acks = self._ack_waiters.get(record.invocation_id, [])
                waiters = [f for f, kinds in acks if isinstance(record, kinds)]
                rest = [(f, k) for f, k in acks if not isinstance(record, k)]
                if rest:
                    self._ack_waiters[record.invocation_id] = rest
                else:
                    self._ack_waiters.pop(record.invocation_id, None)
        for fut in waiters:
            if not fut.done():
                fut.set_result(record)  # type: ignore[arg-type]  # results go to result waiters only

    def fail_all(self, reason: str) -> None:
        """Fail every current waiter with `Unavailable(reason)` (e.g. on shutdown): a request must
        not wait for an answer this listener will not deliver."""
        with self._lock:
            waiters = [f for fs in self._waiters.values() for f in fs]
            waiters += [f for acks in self._ack_waiters.values() for f, _ in acks]
            self._waiters.clear()
            self._ack_waiters.clear()

        def fail() -> None:
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(Unavailable(reason))

        if waiters:
            self._call_in_loop(fail)

    def _give_up(self, component: str, reason: str) -> None:
        """The supervisor gave the tail up: no answer will come, so no one may wait for one."""
        gone = f"the results tail gave up ({reason}); no answer can be received"
        with self._lock:
            self._gone = gone
        self.fail_all(gone)
        supervision.fatal(component, reason)

    def _call_in_loop(self, fn: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server is gone, nobody waits any more
            log.debug("results.loop_closed")

    def _run(self, stop: threading.Event) -> None:
        group = f"{self._settings.topic_prefix}-ingress-results"
        # `Consumer` by its name here: unit tests replace it with a fake.
        with tail_consumer(self._settings, group, Consumer, **self._link.config()) as consumer:
            self._follow(consumer, stop)

    def _follow(self, consumer: Consumer, stop: threading.Event) -> None:
        sup = self._supervisor
        parts = retry_until_stopped(
            stop, sup, f"describe {self._topic}", lambda: partitions_of(consumer, self._topic)
        )
        if parts is None:
            return
        with self._lock:
            known = dict(self._positions)
        if not self._ready.is_set():
            # First start: from the end, as explicit offsets (OFFSET_END would be resolved lazily),
            # so readiness means "every result from here on".
            ends = retry_until_stopped(
                stop, sup, f"read the end of {self._topic}", lambda: self._ends(consumer, parts)
            )
            if ends is None:
                return
            start = ends
        else:
            # A restart: after the last record consumed; a partition never seen from its start.
            start = {p: known.get(p, OFFSET_BEGINNING) for p in parts}
        with self._lock:
            for p, offset in start.items():
                if offset >= 0:
                    self._positions.setdefault(p, offset)
        consumer.assign([TopicPartition(self._topic, p, offset) for p, offset in start.items()])
        self._link.mark_reachable()
        sup.mark_up()
        self._ready.set()
        log.info("results.following", topic=self._topic, restarts=sup.restarts)
        while not stop.is_set():
            msgs = poll_batch(consumer, 0.1)
            if not msgs:
                self._link.probe(consumer, self._topic)
                continue
            self._link.mark_reachable()
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("results.error", topic=self._topic, error=describe_error(err))
                    continue
                try:
                    record = _decode(msg.value() or b"")
                except (codec.DecodeError, ValueError) as e:
                    log.warning(
                        "results.undecodable", partition=msg.partition(), offset=msg.offset(), error=str(e)
                    )
                else:
                    self._call_in_loop(self._deliver, record)
                partition, offset = partition_offset(msg)
                with self._lock:
                    self._positions[partition] = offset + 1

    def _ends(self, consumer: Consumer, parts: list[int]) -> dict[int, int]:
        ends = {}
        for p in parts:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self._topic, p), timeout=10.0, cached=False
            )
            ends[p] = high
        return ends
