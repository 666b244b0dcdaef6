"""Producing commands from an asyncio server (ingress, admin) and waiting for the processors'
answers on `results`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from kafka_core.errors import describe_error, error_of
from kafka_core.kafka import producer_config
from kafka_core.results import ResultsListener
from kafka_core.supervision import (
    KafkaLink,
    SupervisedThread,
    Unavailable,
    WaitTimeout,
    discard_producer,
    join_problems,
)
from schemas.ids import InvocationId
from schemas.partitioner import routing_key
from schemas.records import Command
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)

# How long a request waits for Kafka to acknowledge a command it produced (also the producer's
# `message.timeout.ms`, so librdkafka gives up on the record at the same time).
DELIVERY_TIMEOUT_S = 10.0


@dataclass
class _Pending:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    generation: int


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():  # the request stopped waiting (its bound passed, or it was cancelled)
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


class CommandClient:
    """An idempotent producer to `commands` plus a tail of `results`.

    Delivery reports are served by a supervised thread blocked in `poll()`, so an awaiting request
    hears of its record's delivery at once rather than at the next tick of a timer. A fatal
    producer error (an idempotent producer goes fatal e.g. when the broker lost its producer
    state) fails the requests in flight with `Unavailable` and the producer is recreated, so the
    next request works.
    """

    def __init__(self, settings: Settings, *, delivery_timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
        self.settings = settings
        self.topic = Topics(settings.topic_prefix).commands
        self.delivery_timeout_s = delivery_timeout_s
        self._lock = threading.Lock()
        self._generation = 0
        self._link: KafkaLink
        self.producer = self._new_producer()
        self._broken: str | None = None  # why the producer is unusable, until it is recreated
        self._pending: dict[int, _Pending] = {}
        self.results: ResultsListener | None = None
        self._poller = SupervisedThread("command-producer", self._poll)

    def _new_producer(self) -> Producer:
        self._link = KafkaLink("command producer")
        return Producer(
            producer_config(
                self.settings,
                **{"message.timeout.ms": int(self.delivery_timeout_s * 1000), **self._link.config()},
            )
        )

    async def start(self) -> None:
        self.results = ResultsListener(self.settings, asyncio.get_running_loop())
        await asyncio.to_thread(self.results.start)
        self._poller.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self._poller.stop, 5.0)
        await asyncio.to_thread(self.producer.flush, 5.0)
        if self.results:
            await asyncio.to_thread(self.results.stop)

    def health(self) -> str | None:
        """None while commands can be produced and answers received, else why not."""
        broken = self._broken
        return join_problems(
            self._poller.health(),
            f"the command producer is unusable: {broken}" if broken else None,
            self._link.problem(),
            self.results.health() if self.results is not None else "the results tail is not started",
        )

    # -- the delivery poller ----------------------------------------------------------------------

    def _poll(self, stop: threading.Event) -> None:
        if self._poller.restarts:  # whatever broke the poller may have broken the producer too
            self._request_recreate("the delivery poller crashed")
        while not stop.is_set():
            fatal_error = self._link.fatal_error
            if fatal_error is not None and self._broken is None:
                self._request_recreate(describe_error(fatal_error))
            if self._broken is not None:
                self._recreate()
            self.producer.poll(0.1)
            self._link.probe(self.producer, self.topic)

    def _request_recreate(self, reason: str) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = reason
                log.error("commands.producer_unusable", reason=reason, generation=self._generation)

    def _recreate(self) -> None:
        with self._lock:
            old, reason, generation = self.producer, self._broken, self._generation
            stranded = [p for p in self._pending.values() if p.generation == generation]
        error = Unavailable(
            f"the command producer failed ({reason}) and is being recreated; "
            "the command may or may not have been written"
        )
        for p in stranded:
            with contextlib.suppress(RuntimeError):  # that request's loop is gone
                p.loop.call_soon_threadsafe(_settle, p.future, error)
        discard_producer(old, "command-producer")
        new = self._new_producer()
        with self._lock:
            self.producer = new
            self._generation = generation + 1
            self._broken = None
        log.warning("commands.producer_recreated", reason=reason, generation=generation + 1)

    # -- sending ----------------------------------------------------------------------------------

    async def send(self, invocation_id: InvocationId, command: Command) -> None:
        """Append `command` to the partition of `invocation_id`; returns once it is written."""
        await self.send_keyed(invocation_id.partition_key, command)

    async def send_keyed(self, partition_key: int, command: Command) -> None:
        """Append `command` to the partition of `partition_key` (an invocation's, or an object's:
        `partition_key_of(key)`); returns once it is written.

        Raises `Unavailable` when Kafka does not take it (with the reason) and `WaitTimeout` when
        Kafka did not acknowledge it within `delivery_timeout_s`."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:
            broken, producer, generation, link = self._broken, self.producer, self._generation, self._link
        if broken is not None:
            raise Unavailable(f"the command producer is being recreated after a fatal error ({broken})")

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is None:
                link.mark_reachable()
                error = None
            else:
                if err.fatal():
                    self._request_recreate(describe_error(err))
                error = Unavailable(f"Kafka did not take the command: {describe_error(err)}")
            with contextlib.suppress(RuntimeError):  # the request's loop is gone
                loop.call_soon_threadsafe(_settle, done, error)

        try:
            producer.produce(
                self.topic,
                key=routing_key(partition_key),
                value=command.encode(),
                on_delivery=on_delivery,
            )
        except BufferError:
            raise Unavailable("the command producer's queue is full; retry later") from None
        except KafkaException as e:
            err = error_of(e)
            if err is not None and err.fatal():
                self._request_recreate(describe_error(err))
            raise Unavailable(f"cannot produce the command: {describe_error(err) if err else e}") from None
        key = id(done)
        with self._lock:
            self._pending[key] = _Pending(loop, done, generation)
        try:
            # librdkafka times the record out at `delivery_timeout_s`; the margin lets its report win.
            await asyncio.wait_for(done, self.delivery_timeout_s + 2.0)
        except TimeoutError:
            raise WaitTimeout(
                f"Kafka did not acknowledge the command within {self.delivery_timeout_s:g}s; "
                "it may still be written"
            ) from None
        finally:
            with self._lock:
                self._pending.pop(key, None)
