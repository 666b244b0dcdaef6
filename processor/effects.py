"""Appending the processor's own inputs to `commands`: attempt outcomes, fired timers, barriers.

These records are facts from outside the state machine (what a deployment answered, that the
clock passed a wake-up time). They need no transaction: an idempotent producer appends them, and
they are applied when the partition's owner reads them back, in log order like any command, so
replaying `commands` gives exactly what the owner did. A duplicate (a zombie's late outcome, a
timer fired twice) is recognised by the state machine and changes nothing.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from kafka_core.kafka import producer_config
from kafka_core.supervision import SupervisedThread
from schemas.records import Command
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


class EffectProducer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).commands
        self._lock = threading.Lock()
        self._producer = self._new_producer()
        self._retired: list[Producer] = []
        self._poller = SupervisedThread("effects-producer", self._poll)

    def _new_producer(self) -> Producer:
        return Producer(producer_config(self._settings, **{"linger.ms": 0, "acks": "all"}))

    def start(self) -> EffectProducer:
        self._poller.start()
        return self

    def stop(self) -> None:
        self._poller.stop()
        with self._lock:
            remaining = self._producer.flush(10.0)
        if remaining:
            log.warning("effects.unflushed", records=remaining)

    def _poll(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._lock:
                producer = self._producer
                retired, self._retired = self._retired, []
            producer.poll(0.1)
            for old in retired:  # outside their own callbacks: drop what they still hold
                old.purge()
                old.poll(0)

    def append(self, partition: int, key: bytes, command: Command) -> Future[None]:
        """Append `command` to `commands[partition]`; the future resolves once it is written."""
        done: Future[None] = Future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None and err.fatal():
                self._recreate(err)
            # The waiter may be gone (its attempt was cancelled): the outcome is in the log or
            # not; either way there is nobody left to tell.
            with contextlib.suppress(InvalidStateError):
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(KafkaException(err))

        try:
            with self._lock:
                self._producer.produce(
                    self._topic, key=key, value=command.encode(), partition=partition, on_delivery=on_delivery
                )
        except (KafkaException, BufferError) as e:
            done.set_exception(e)
        return done

    def _recreate(self, err: KafkaError) -> None:
        """An idempotent producer that went fatal (e.g. its state was lost in a broker restart)
        is unusable: replace it; what it had not delivered is failed and retried by the caller."""
        log.error("effects.producer_fatal", error=err.str())
        with self._lock:
            self._retired.append(self._producer)
            self._producer = self._new_producer()
