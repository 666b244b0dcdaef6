"""The processor's one transactional producer (exactly-once v2), kept usable.

Its transactional id is the processor's own (unique per processor slot), so re-initialising it
never fences another processor; that is what makes replacing it the answer to most troubles:

- a call that does not come back: librdkafka 2.16 may keep a stale group coordinator after an
  outage and then never send the offsets, its own timeout ignored (librdkafka #5456, #5511).
  Every call runs in a worker thread with a deadline; past it, the producer is abandoned (its
  call left blocked in that thread) and a new one takes the id;
- after an outage, before it is used again (the same bug, avoided rather than waited out);
- fenced: a transaction of ours outlived `transaction.timeout.ms` (a stalled process) and the
  coordinator bumped the epoch; or a fatal error. If it keeps being fenced, someone else uses our
  id (two processors given one instance id): stop rather than fence them back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from kafka_core.errors import Disposition, classify, describe
from kafka_core.supervision import Unrecoverable

log = structlog.get_logger(__name__)

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0  # what librdkafka is told
CALL_DEADLINE_S = CALL_TIMEOUT_S + 10.0  # what we wait before giving the producer up
MAX_REPLACEMENTS = 5  # fenced/abandoned producers within REPLACEMENT_WINDOW_S before we stop
REPLACEMENT_WINDOW_S = 300.0


class Wedged(Exception):
    """A transactional call did not return by its deadline."""


class TransactionalProducer:
    def __init__(
        self,
        factory: Callable[[dict[str, Any]], Producer],
        config: dict[str, Any],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._factory = factory
        self._config = {**config, "error_cb": self._on_error}
        self._user_error_cb = config.get("error_cb")
        self._stopping = stopping
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="transactions")
        self._abandoned: list[Producer] = []  # kept alive: destroying them would block
        self._replacements: list[float] = []
        self.outage = False
        self.generation = 0  # replacements so far: the owner re-restores its tasks after one
        self.producer: Producer = self._create()

    # -- calls ----------------------------------------------------------------------------------

    def _call(self, name: str, call: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        future = self._calls.submit(call)
        try:
            r = future.result(CALL_DEADLINE_S)
            log.debug("txn.call", name=name, ms=round((time.perf_counter() - t0) * 1000, 2))
            return r
        except FutureTimeout:
            # The worker thread stays blocked in librdkafka; later calls get a fresh one.
            self._calls.shutdown(wait=False)
            self._calls = ThreadPoolExecutor(1, thread_name_prefix="transactions")
            raise Wedged(f"{name} did not return within {CALL_DEADLINE_S:.0f}s") from None

    def _create(self) -> Producer:
        producer = self._factory(self._config)
        self._call("init_transactions", lambda: producer.init_transactions(CALL_TIMEOUT_S))
        return producer

    def replace_if_outage(self) -> bool:
        """After an outage, a new producer before the next transaction."""
        if not self.outage:
            return False
        self.outage = False
        self.replace("Kafka was unreachable: replaced before it is used again")
        return True

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        producer = self.producer
        self._call(
            "send_offsets_to_transaction",
            lambda: producer.send_offsets_to_transaction(offsets, group_metadata, CALL_TIMEOUT_S),
        )

    def commit(self) -> None:
        producer = self.producer
        for attempt in range(4):
            try:
                self._call("commit_transaction", lambda: producer.commit_transaction(CALL_TIMEOUT_S))
                return
            except KafkaException as e:
                if classify(e) != Disposition.RETRY or attempt == 3:
                    raise
                log.warning("processor.commit_retry", error=describe(e))

    def abort(self) -> None:
        producer = self.producer
        self._call("abort_transaction", lambda: producer.abort_transaction(CALL_TIMEOUT_S))

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.outage = True
        if self._user_error_cb is not None:
            self._user_error_cb(err)

    # -- replacing ------------------------------------------------------------------------------

    def replace(self, why: str) -> None:
        """A new producer with the same id; init_transactions aborts what the old one left open."""
        now = time.monotonic()
        self._replacements = [t for t in self._replacements if now - t < REPLACEMENT_WINDOW_S] + [now]
        if len(self._replacements) > MAX_REPLACEMENTS:
            raise Unrecoverable(
                f"the transactional producer was replaced {len(self._replacements)} times in "
                f"{REPLACEMENT_WINDOW_S:.0f}s (last: {why}); is another processor using this id?"
            )
        log.warning("processor.replacing_producer", why=why)
        old = self.producer
        self._abandoned.append(old)
        try:
            old.purge()
        except Exception:  # noqa: BLE001 - it is being dropped
            log.debug("processor.purge_failed", exc_info=True)
        delay = 0.5
        while not self._stopping():
            try:
                self.producer = self._create()
                self.generation += 1
                log.info("processor.producer_replaced", generation=self.generation)
                return
            except (KafkaException, Wedged) as e:
                log.warning("processor.producer_init_failed", error=describe(e), retry_in_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        try:
            self.producer.flush(5.0)
        finally:
            self._calls.shutdown(wait=False)
