"""Supervised background work: nothing in a kinvoke process fails silently.

Every background thread runs under a `SupervisedThread`: an exception is logged with the
component's name and the thread's body is started again after a backoff; a component that keeps
failing (or that declares itself unrecoverable) makes the whole process stop with a non-zero exit
code through `fatal()`, so a supervisor (`kinvoke dev`, systemd, Kubernetes) can restart it.
This is Faust's `mode.Service` / Restate's TaskCenter in small.

The second half watches Kafka clients: a `KafkaLink` turns a client's `error_cb` into a health
state (all brokers down, fatal error), which `/health` reports and producers act on.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from confluent_kafka import KafkaError, KafkaException

from kafka_core.errors import describe_error, error_of

log = structlog.get_logger(__name__)
T = TypeVar("T")

FATAL_EXIT_CODE = 70  # EX_SOFTWARE
_fatal = threading.Event()
_fatal_reason: list[str] = []


class Unrecoverable(Exception):
    """Raised by a component that must not be restarted in this process (e.g. fenced for good)."""


class Unavailable(Exception):
    """Kafka work that cannot be done now (producer unusable, broker unreachable, a component gave
    up): the HTTP surfaces answer 503 with this reason, and a retry later may succeed."""


class WaitTimeout(Unavailable):
    """A bounded wait on Kafka (a delivery, an answer on `results`, a view catching up) passed its
    bound; the message says what was not answered."""


def fatal(component: str, reason: str, *, grace_s: float = 30.0) -> None:
    """Stop the process: ask it to shut down cleanly (SIGTERM to itself), then force the exit if
    the shutdown does not finish within `grace_s`."""
    if _fatal.is_set():
        return
    _fatal_reason.append(f"{component}: {reason}")
    _fatal.set()
    log.critical("process.fatal", component=component, reason=reason)

    def force() -> None:
        time.sleep(grace_s)
        log.critical("process.forced_exit", component=component, after_s=grace_s)
        os._exit(FATAL_EXIT_CODE)

    threading.Thread(target=force, name="fatal-watchdog", daemon=True).start()
    os.kill(os.getpid(), signal.SIGTERM)


def is_fatal() -> bool:
    return _fatal.is_set()


def fatal_reason() -> str | None:
    return _fatal_reason[0] if _fatal_reason else None


def exit_code() -> int:
    """What an entry point returns after its shutdown: non-zero when a component gave up."""
    return FATAL_EXIT_CODE if _fatal.is_set() else 0


class SupervisedThread:
    """Runs `body(stop)` in a daemon thread until `stop` is set, restarting it when it fails.

    `body` is expected to loop until `stop.is_set()`; returning early counts as a failure too
    (a component that silently ends is as bad as one that raises). After `max_failures` failures
    within `window_s` seconds the process is stopped through `fatal()` (or `on_fatal`).

    Health: the component is down from a failure until it is up again. With `auto_up` (default) a
    (re)started body counts as up; a body that first has to connect passes `auto_up=False` and calls
    `mark_up()` once it serves, and may `mark_down(reason)` while it waits for something.
    """

    def __init__(
        self,
        name: str,
        body: Callable[[threading.Event], None],
        *,
        max_failures: int = 10,
        window_s: float = 60.0,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        on_fatal: Callable[[str, str], None] | None = None,
        auto_up: bool = True,
    ) -> None:
        self.name = name
        self._body = body
        self._max_failures = max_failures
        self._window_s = window_s
        self._backoff = backoff_s
        self._on_fatal = on_fatal
        self._auto_up = auto_up
        self.stop_event = threading.Event()
        self.failures: list[float] = []
        self.restarts = 0
        self._down: str | None = "not started"
        self._gave_up: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> SupervisedThread:
        self._down = "starting"
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stop_event.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("component.stop_timeout", component=self.name, timeout_s=timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- health -----------------------------------------------------------------------------------

    def mark_up(self) -> None:
        if self._down is not None and self._gave_up is None:
            if self.restarts:
                log.info("component.recovered", component=self.name, restarts=self.restarts)
            self._down = None

    def mark_down(self, reason: str) -> None:
        if self._gave_up is None:
            self._down = reason

    @property
    def gave_up(self) -> str | None:
        """Why the supervisor gave the component up (it is not restarted any more), or None."""
        return self._gave_up

    def health(self) -> str | None:
        """None while the component serves, else why it does not (for `/health`)."""
        if self._gave_up is not None:
            return f"{self.name} gave up: {self._gave_up}"
        if self._down is not None:
            return f"{self.name} is down: {self._down}"
        if not self._thread.is_alive():
            return f"{self.name} is not running"
        return None

    # -- the supervisor loop ----------------------------------------------------------------------

    def _give_up(self, reason: str) -> None:
        self._gave_up = reason
        (self._on_fatal or fatal)(self.name, reason)

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self.stop_event.is_set():
            if self._auto_up:
                self.mark_up()
            try:
                self._body(self.stop_event)
                if self.stop_event.is_set():
                    return
                reason = "returned while it should still be running"
                log.error("component.exited", component=self.name, restarts=self.restarts)
            except Unrecoverable as e:
                log.error("component.unrecoverable", component=self.name, reason=str(e), exc_info=True)
                self._give_up(str(e))
                return
            except Exception as e:  # noqa: BLE001 - every failure is logged and supervised
                if self.stop_event.is_set():
                    log.warning("component.failed_while_stopping", component=self.name, exc_info=True)
                    return
                reason = f"{type(e).__name__}: {e}"
                log.exception("component.crashed", component=self.name, restarts=self.restarts)
            self._down = reason
            now = time.monotonic()
            self.failures = [t for t in self.failures if now - t < self._window_s] + [now]
            if len(self.failures) >= self._max_failures:
                self._give_up(f"failed {len(self.failures)} times in {self._window_s:.0f}s; last: {reason}")
                return
            if self.stop_event.wait(delay):
                return
            delay = min(delay * 2, self._backoff[1])
            self.restarts += 1
            log.info("component.restarting", component=self.name, restarts=self.restarts)


# -- Kafka clients ------------------------------------------------------------------------------


class KafkaLogger:
    """librdkafka's own log lines, through structlog, each kind at most once per `every_s`.

    During an outage librdkafka logs every reconnect attempt (tens of lines a second per client);
    the first of a kind is logged, the rest counted and reported with the next one let through.
    """

    def __init__(self, component: str, *, every_s: float = 30.0) -> None:
        self.component = component
        self._every_s = every_s
        self._last: dict[tuple[int, str], float] = {}
        self._suppressed: dict[tuple[int, str], int] = {}

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility = str(args[0]) if args else "?"
        key = (level, facility)
        now = time.monotonic()
        if now - self._last.get(key, -self._every_s) < self._every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        try:
            message = fmt % args
        except (TypeError, ValueError):
            message = " ".join([fmt, *map(str, args)])
        fields: dict[str, str | int] = {"component": self.component, "message": message, "facility": facility}
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed_since_last"] = suppressed
        if level >= 30:  # WARNING and above: librdkafka recovers from most of these by itself
            log.warning("kafka.client_log", **fields)
        else:
            log.debug("kafka.client_log", **fields)


class KafkaLink:
    """What one Kafka client's `error_cb` says about it: all brokers down, or a fatal error.

    librdkafka reconnects by itself and reports every failed connection; this keeps the state
    (for `/health` and for recreating a fatal producer) and logs each kind of error at most once
    per `log_every_s`, so an outage is visible without flooding the log.
    """

    def __init__(self, component: str, *, log_every_s: float = 30.0) -> None:
        self.component = component
        self._log_every_s = log_every_s
        self._logged: dict[int, float] = {}
        self.unreachable: str | None = None  # why, while all brokers are down
        self.fatal_error: KafkaError | None = None
        self._last_probe = 0.0

    def config(self) -> dict[str, Any]:
        """The client config entries that feed this link (and route librdkafka's own log)."""
        return {"error_cb": self.error_cb, "logger": KafkaLogger(self.component, every_s=self._log_every_s)}

    def error_cb(self, err: KafkaError) -> None:
        if err.fatal():
            if self.fatal_error is None:
                self.fatal_error = err
                log.error("kafka.fatal_error", component=self.component, error=describe_error(err))
            return
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.unreachable is None:
                log.warning("kafka.unreachable", component=self.component, error=describe_error(err))
            self.unreachable = f"Kafka is unreachable ({err.str()})"
            return
        now = time.monotonic()
        if now - self._logged.get(err.code(), -self._log_every_s) >= self._log_every_s:
            self._logged[err.code()] = now
            log.warning("kafka.client_error", component=self.component, error=describe_error(err))

    def mark_reachable(self) -> None:
        """Called when the client got an answer from a broker (a delivery, a fetch, metadata)."""
        if self.unreachable is not None:
            log.info("kafka.reachable", component=self.component)
            self.unreachable = None

    def probe(self, client: Any, topic: str, *, every_s: float = 1.0, timeout_s: float = 1.0) -> None:
        """While unreachable, ask a broker for `topic`'s metadata (at most every `every_s`): an
        idle client hears of no broker otherwise, so its link would stay "unreachable"."""
        now = time.monotonic()
        if self.unreachable is None or now - self._last_probe < every_s:
            return
        self._last_probe = now
        try:
            client.list_topics(topic, timeout=timeout_s)
        except KafkaException:
            return
        self.mark_reachable()

    def problem(self) -> str | None:
        if self.fatal_error is not None:
            return f"{self.component}: fatal Kafka client error {describe_error(self.fatal_error)}"
        if self.unreachable is not None:
            return f"{self.component}: {self.unreachable}"
        return None


def join_problems(*problems: str | None) -> str | None:
    """Several health answers as one: None when all are None, else the problems joined."""
    found = [p for p in problems if p]
    return "; ".join(found) if found else None


def partitions_of(client: Any, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partitions of `topic`; a KafkaException while the broker cannot say (or the topic is
    missing), so callers can wait it out."""
    meta = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if meta is None:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic} not in metadata"))
    if meta.error is not None:
        raise KafkaException(meta.error)
    if not meta.partitions:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic} has no partitions"))
    return sorted(meta.partitions)


def retry_until_stopped(
    stop: threading.Event,
    supervisor: SupervisedThread,
    what: str,
    call: Callable[[], T],
    *,
    backoff_s: tuple[float, float] = (0.2, 5.0),
) -> T | None:
    """`call()` again and again while Kafka cannot answer it (the component is down meanwhile);
    None once `stop` is set. A broker outage is waited out here rather than counted as a crash, so
    it never makes the supervisor give the process up. Fatal client errors are raised."""
    delay = backoff_s[0]
    while not stop.is_set():
        try:
            return call()
        except KafkaException as e:
            err = error_of(e)
            if err is not None and err.fatal():
                raise
            reason = f"waiting for Kafka to {what}: {describe_error(err) if err else e}"
            supervisor.mark_down(reason)
            log.warning("kafka.waiting", component=supervisor.name, reason=reason, retry_in_s=delay)
            stop.wait(delay)
            delay = min(delay * 2, backoff_s[1])
    return None


def discard_producer(producer: Any, component: str) -> None:
    """Drop a producer that must not be used again: purge what it holds (its delivery reports
    then fail the requests waiting on them) and close it in the background."""
    try:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        producer.poll(0)
    except Exception:  # noqa: BLE001 - a fatal producer may refuse even this
        log.warning("kafka.producer_purge_failed", component=component, exc_info=True)

    def close() -> None:
        try:
            producer.flush(1.0)
            producer.close()
        except Exception:  # noqa: BLE001
            log.warning("kafka.producer_close_failed", component=component, exc_info=True)

    threading.Thread(target=close, name=f"{component}-close", daemon=True).start()
