"""Subscription consumers under failures (in-memory Kafka fake): a crashed consumer is restarted
with new clients and resumes from the committed offsets, and an offset is committed only once
the Invokes of it and of every record before it are in `commands`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaError

from processor import subscriptions as subs_mod
from processor.subscriptions import SubscriptionConsumer, SubscriptionRunner, _Watermarks
from schemas.records import Command
from schemas.registry import HandlerRecord, KafkaClusterRecord, Registry, ServiceRecord, SubscriptionRecord
from schemas.settings import Settings
from schemas.topics import Topics
from tests.support.fake_kafka import FakeCluster, fatal_error

SETTINGS = Settings(topic_prefix="unit")
COMMANDS = Topics("unit").commands
SUB = SubscriptionRecord(
    id="sub_1",
    source="kafka://ext/orders",
    sink="service://Greeter/greet",
    options={"group.id": "orders-group"},
    created_at_ms=1,
)


class FakeMetadata:
    def __init__(self) -> None:
        self._registry = Registry()
        self._registry.clusters["ext"] = KafkaClusterRecord(
            name="ext", properties={"bootstrap.servers": "ext:9092"}, created_at_ms=1
        )
        self._registry.services["Greeter"] = ServiceRecord(
            name="Greeter",
            ty="Service",
            revision=1,
            deployment_id="dp_1",
            handlers=[HandlerRecord(name="greet", ty=None)],
        )
        self._registry.subscriptions[SUB.id] = SUB

    def registry(self) -> Registry:
        return self._registry


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    cluster = FakeCluster()
    cluster.create("orders", 2)
    cluster.create(COMMANDS, 4)
    monkeypatch.setattr(subs_mod, "Consumer", cluster.consumer_factory)
    monkeypatch.setattr(subs_mod, "Producer", cluster.producer_factory)
    return cluster


@pytest.fixture
def consumer(cluster: FakeCluster) -> Iterator[SubscriptionConsumer]:
    c = SubscriptionConsumer(SETTINGS, SUB, FakeMetadata())  # type: ignore[arg-type]
    c._supervisor._backoff = (0.01, 0.01)  # noqa: SLF001 - restart at once in tests
    c.start()
    try:
        yield c
    finally:
        c.stop()


def invokes(cluster: FakeCluster) -> list[tuple[int, int]]:
    """(partition, offset) of the source record of every Invoke in `commands`."""
    out = []
    for part in cluster.topics[COMMANDS]:
        for msg in part:
            headers = {h.name: h.value for h in Command.decode(msg.value()).body.headers}  # type: ignore[union-attr]
            out.append((int(headers["kafka.partition"]), int(headers["kafka.offset"])))
    return sorted(out)


def test_a_crashed_subscription_consumer_restarts_and_resumes(
    cluster: FakeCluster, consumer: SubscriptionConsumer
) -> None:
    for i in range(3):
        cluster.append("orders", f"k{i}".encode(), b'"x"', partition=0)
    eventually(lambda: len(invokes(cluster)) == 3)
    first = cluster.consumers[-1]
    first.fail_polls.append(RuntimeError("consumer broke"))
    eventually(lambda: len(cluster.consumers) == 2)
    assert first.closed and cluster.committed[("orders-group", "orders", 0)] == 3
    second = cluster.consumers[-1]
    assert len(cluster.producers) == 2  # the producer is new too
    assert {tp.partition: tp.offset for tp in second.assigned_at} == {0: 3, 1: 0}
    cluster.append("orders", b"k3", b'"y"', partition=0)
    eventually(lambda: (0, 3) in invokes(cluster))
    assert invokes(cluster) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    eventually(lambda: consumer.health() is None)


def test_a_lost_invoke_is_read_again_after_the_restart(
    cluster: FakeCluster, consumer: SubscriptionConsumer
) -> None:
    eventually(lambda: len(cluster.producers) == 1)
    cluster.producers[0].fail_deliveries.append(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"))
    for i in range(3):
        cluster.append("orders", f"k{i}".encode(), b'"x"', partition=1)
    # The first record's Invoke is lost: the consumer restarts, and the committed offset is not past it.
    eventually(lambda: len(cluster.consumers) == 2)
    assert cluster.committed.get(("orders-group", "orders", 1), 0) == 0
    eventually(lambda: (1, 0) in invokes(cluster))
    assert set(invokes(cluster)) == {(1, 0), (1, 1), (1, 2)}  # records 1 and 2 may be enqueued twice


def test_a_fatal_producer_error_restarts_the_consumer_with_a_new_producer(
    cluster: FakeCluster, consumer: SubscriptionConsumer
) -> None:
    eventually(lambda: len(cluster.producers) == 1)
    cluster.producers[0].fail_deliveries.append(fatal_error("producer id lost"))
    cluster.append("orders", b"k", b'"x"', partition=0)
    eventually(lambda: len(cluster.producers) == 2)
    eventually(lambda: invokes(cluster) == [(0, 0)])


def test_watermarks_never_pass_an_undelivered_record() -> None:
    marks = _Watermarks()
    for offset in (5, 6, 7):
        marks.sent(0, offset)
    assert marks.delivered(0, 6) == 5  # 5 is still in flight: commit up to it, not past
    assert marks.delivered(0, 7) is None
    assert marks.delivered(0, 5) == 8
    marks.sent(0, 8)
    assert marks.delivered(0, 8) == 9


def test_runner_restarts_its_reconcile_loop(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = SubscriptionRunner(SETTINGS, FakeMetadata())  # type: ignore[arg-type]
    runner._supervisor._backoff = (0.01, 0.01)  # noqa: SLF001
    calls: list[int] = []
    original = runner._reconcile  # noqa: SLF001

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("registry glitch")
        original()

    monkeypatch.setattr(runner, "_reconcile", flaky)
    runner.start()
    try:
        eventually(lambda: len(cluster.consumers) == 1)
        assert runner._supervisor.restarts == 1  # noqa: SLF001
        eventually(lambda: runner.health() is None)
    finally:
        runner.stop()
    assert cluster.consumers[0].closed
