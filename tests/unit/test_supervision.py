"""The supervision utility: restarts, giving up, health, and what Kafka client errors mean."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka_core import supervision
from kafka_core.errors import error_of
from kafka_core.supervision import (
    FATAL_EXIT_CODE,
    KafkaLink,
    KafkaLogger,
    SupervisedThread,
    Unrecoverable,
    join_problems,
    partitions_of,
    retry_until_stopped,
)
from tests.support.fake_kafka import FakeCluster, fatal_error
from tests.support.processes import REPO


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, component: str, reason: str) -> None:
        self.calls.append((component, reason))


def test_a_crash_is_restarted_and_the_component_goes_on() -> None:
    runs: list[int] = []
    gave_up = Recorder()

    def body(stop: threading.Event) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("boom")
        stop.wait()

    sup = SupervisedThread("flaky", body, backoff_s=(0.01, 0.05), on_fatal=gave_up).start()
    try:
        eventually(lambda: len(runs) == 2)
        assert sup.restarts == 1 and sup.is_alive()
        assert sup.health() is None  # auto_up: the restarted body counts as up
        assert gave_up.calls == []
    finally:
        sup.stop()
    assert not sup.is_alive()


def test_returning_early_counts_as_a_failure() -> None:
    runs: list[int] = []

    def body(stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) > 2:
            stop.wait()

    sup = SupervisedThread("quitter", body, backoff_s=(0.01, 0.01), on_fatal=Recorder()).start()
    try:
        eventually(lambda: len(runs) == 3)
        assert len(sup.failures) == 2
    finally:
        sup.stop()


def test_repeated_failures_give_up_through_on_fatal() -> None:
    gave_up = Recorder()

    def body(stop: threading.Event) -> None:
        raise ValueError("always")

    sup = SupervisedThread(
        "doomed", body, max_failures=3, window_s=60, backoff_s=(0.01, 0.01), on_fatal=gave_up
    ).start()
    eventually(lambda: not sup.is_alive())
    assert len(gave_up.calls) == 1
    component, reason = gave_up.calls[0]
    assert component == "doomed" and "failed 3 times" in reason and "ValueError: always" in reason
    assert sup.gave_up is not None
    assert (sup.health() or "").startswith("doomed gave up: failed 3 times")


def test_unrecoverable_gives_up_at_once() -> None:
    gave_up = Recorder()
    runs: list[int] = []

    def body(stop: threading.Event) -> None:
        runs.append(1)
        raise Unrecoverable("fenced for good")

    sup = SupervisedThread("fenced", body, on_fatal=gave_up).start()
    eventually(lambda: not sup.is_alive())
    assert runs == [1] and gave_up.calls == [("fenced", "fenced for good")]


def test_health_follows_mark_up_and_mark_down() -> None:
    may_serve = threading.Event()

    def body(stop: threading.Event) -> None:
        sup.mark_down("waiting for Kafka")
        may_serve.wait()
        sup.mark_up()
        stop.wait()

    sup = SupervisedThread("connecting", body, auto_up=False, on_fatal=Recorder())
    assert sup.health() == "connecting is down: not started"
    sup.start()
    try:
        eventually(lambda: sup.health() == "connecting is down: waiting for Kafka")
        may_serve.set()
        eventually(lambda: sup.health() is None)
    finally:
        sup.stop()


def test_a_crash_leaves_the_component_down_until_it_says_it_is_up() -> None:
    proceed = threading.Event()
    runs: list[int] = []

    def body(stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("lost the connection")
        proceed.wait()
        sup.mark_up()
        stop.wait()

    sup = SupervisedThread("tail", body, auto_up=False, backoff_s=(0.01, 0.01), on_fatal=Recorder()).start()
    try:
        eventually(lambda: len(runs) == 2)
        assert sup.health() == "tail is down: RuntimeError: lost the connection"
        proceed.set()
        eventually(lambda: sup.health() is None)
    finally:
        sup.stop()


def test_stop_interrupts_the_backoff() -> None:
    def body(stop: threading.Event) -> None:
        raise RuntimeError("x")

    sup = SupervisedThread("slow", body, backoff_s=(30.0, 30.0), on_fatal=Recorder()).start()
    eventually(lambda: len(sup.failures) == 1)
    started = time.monotonic()
    sup.stop()
    assert time.monotonic() - started < 2 and not sup.is_alive()


def test_a_component_that_gives_up_stops_the_process_with_a_non_zero_code() -> None:
    """The real `fatal()`: SIGTERM to the process, whose entry point returns `exit_code()`."""
    script = textwrap.dedent(
        """
        import signal, sys, threading
        from kafka_core import supervision

        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        def body(stop):
            raise RuntimeError("cannot work")
        supervision.SupervisedThread("worker", body, max_failures=2, backoff_s=(0.01, 0.01)).start()
        if not stopped.wait(20):
            sys.exit(99)
        print("reason:", supervision.fatal_reason())
        sys.exit(supervision.exit_code())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == FATAL_EXIT_CODE, done.stdout + done.stderr
    assert "reason: worker: failed 2 times" in done.stdout


def test_exit_code_is_zero_without_a_fatal_component() -> None:
    assert not supervision.is_fatal() and supervision.exit_code() == 0


# -- Kafka clients --------------------------------------------------------------------------------


def test_kafka_link_tracks_unreachable_and_fatal() -> None:
    link = KafkaLink("producer")
    assert link.problem() is None
    link.error_cb(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    assert link.problem() is None  # one connection failing is librdkafka's business
    link.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert link.problem() == "producer: Kafka is unreachable (1/1 brokers are down)"
    link.mark_reachable()
    assert link.problem() is None
    link.error_cb(fatal_error("producer id lost"))
    assert "fatal Kafka client error _FATAL: producer id lost" in (link.problem() or "")


def test_kafka_link_probe_clears_unreachable_once_a_broker_answers() -> None:
    cluster = FakeCluster()
    cluster.create("t")
    client = cluster.producer_factory({})
    link = KafkaLink("view")
    link.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "down"))
    client.hold = True  # metadata requests fail while the broker is away
    link.probe(client, "t", every_s=0)
    assert link.unreachable is not None
    client.hold = False
    link.probe(client, "t", every_s=0)
    assert link.unreachable is None


def test_retry_until_stopped_waits_out_kafka_errors_but_not_fatal_ones() -> None:
    sup = SupervisedThread("x", lambda stop: None, on_fatal=Recorder())
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "down"))
        return "ok"

    stop = threading.Event()
    assert retry_until_stopped(stop, sup, "answer", flaky, backoff_s=(0.01, 0.01)) == "ok"
    assert "waiting for Kafka to answer: _TRANSPORT: down" in (sup.health() or "")

    def fatal() -> str:
        raise KafkaException(fatal_error())

    with pytest.raises(KafkaException):
        retry_until_stopped(stop, sup, "answer", fatal)
    stop.set()
    assert retry_until_stopped(stop, sup, "answer", flaky) is None


def test_partitions_of_a_missing_topic_is_a_kafka_error() -> None:
    cluster = FakeCluster()
    cluster.create("there", 3)
    client = cluster.consumer_factory({})
    assert partitions_of(client, "there") == [0, 1, 2]
    with pytest.raises(KafkaException) as e:
        partitions_of(client, "missing")
    err = error_of(e.value)
    assert err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_join_problems() -> None:
    assert join_problems(None, None) is None
    assert join_problems("a", None, "b") == "a; b"


def test_librdkafka_log_lines_are_rate_limited_per_kind() -> None:
    from structlog.testing import capture_logs

    logger = KafkaLogger("producer", every_s=3600)
    line = "[thrd:b/bootstrap]: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    with capture_logs() as logs:
        for _ in range(50):
            logger.log(40, "%s [%s] %s", "FAIL", "rdkafka#producer-1", line)
        logger.log(40, "%s [%s] %s", "REQTMOUT", "rdkafka#producer-1", "timed out")
    assert [(e["facility"], e["log_level"]) for e in logs] == [("FAIL", "warning"), ("REQTMOUT", "warning")]
    assert logs[0]["message"] == f"FAIL [rdkafka#producer-1] {line}"
    logger._every_s = 0  # noqa: SLF001 - let the next one through
    with capture_logs() as logs:
        logger.log(40, "%s [%s] %s", "FAIL", "rdkafka#producer-1", line)
    assert logs[0]["suppressed_since_last"] == 49
