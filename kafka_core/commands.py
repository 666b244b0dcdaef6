"""Producing commands from an asyncio server (ingress, admin) and waiting for the processors'
answers on `results`."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import Producer

from kafka_core.kafka import producer_config
from kafka_core.results import ResultsListener
from schemas.ids import InvocationId
from schemas.partitioner import routing_key
from schemas.records import Command
from schemas.settings import Settings
from schemas.topics import Topics


class CommandClient:
    """An idempotent producer to `commands` plus a tail of `results`.

    Delivery reports are served by a thread blocked in `poll()`, so an awaiting request hears of
    its record's delivery at once rather than at the next tick of a timer.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = Topics(settings.topic_prefix).commands
        self.producer = Producer(producer_config(settings))
        self.results: ResultsListener | None = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="command-producer", daemon=True)

    async def start(self) -> None:
        self.results = ResultsListener(self.settings, asyncio.get_running_loop())
        await asyncio.to_thread(self.results.start)
        self._poller.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._poller.is_alive():
            await asyncio.to_thread(self._poller.join, 5.0)
        await asyncio.to_thread(self.producer.flush, 5.0)
        if self.results:
            await asyncio.to_thread(self.results.stop)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def send(self, invocation_id: InvocationId, command: Command) -> None:
        """Append `command` to the partition of `invocation_id`; returns once it is written."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                loop.call_soon_threadsafe(done.set_exception, RuntimeError(str(err)))
            else:
                loop.call_soon_threadsafe(done.set_result, None)

        self.producer.produce(
            self.topic,
            key=routing_key(invocation_id.partition_key),
            value=command.encode(),
            on_delivery=on_delivery,
        )
        await done
