"""The Kafka plumbing of the ingress and admin under failures, on an in-memory Kafka fake: a view
or the results tail that crashes resumes where it was, a fatal producer is recreated, and waits
end with `Unavailable` instead of hanging."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException

from kafka_core import commands as commands_mod
from kafka_core import metadata as metadata_mod
from kafka_core import results as results_mod
from kafka_core import supervision
from kafka_core import views as views_mod
from kafka_core.commands import CommandClient
from kafka_core.metadata import MetadataView
from kafka_core.results import ResultsListener
from kafka_core.supervision import Unavailable, WaitTimeout
from kafka_core.views import TopicView
from schemas.ids import InvocationId
from schemas.records import (
    Command,
    InvocationResult,
    ManageAnswer,
    ManageInvocation,
    ManageOperation,
    ManageOutcome,
    Success,
)
from schemas.settings import Settings
from schemas.topics import Topics
from tests.support.fake_kafka import FakeCluster, fatal_error

SETTINGS = Settings(topic_prefix="unit")
TOPICS = Topics("unit")


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    cluster = FakeCluster()
    for topic in (TOPICS.metadata, TOPICS.results, TOPICS.changelog):
        cluster.create(topic, 2 if topic != TOPICS.metadata else 1)
    cluster.create(TOPICS.commands, 4)
    monkeypatch.setattr(views_mod, "Consumer", cluster.consumer_factory)
    monkeypatch.setattr(results_mod, "Consumer", cluster.consumer_factory)
    monkeypatch.setattr(commands_mod, "Producer", cluster.producer_factory)
    monkeypatch.setattr(metadata_mod, "Producer", cluster.producer_factory)
    return cluster


@pytest.fixture
def fatal_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """`fatal()` would SIGTERM the test run: record the calls instead."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(
        supervision, "fatal", lambda component, reason, **_: calls.append((component, reason))
    )
    return calls


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


async def eventually_async(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def result(inv: str, value: bytes = b'"ok"') -> bytes:
    return InvocationResult(invocation_id=inv, result=Success(value=value), completed_at_ms=1).encode()


def new_id() -> InvocationId:
    return InvocationId.generate(7, 1, 1)


# -- TopicView ------------------------------------------------------------------------------------


@pytest.fixture
def view_records(cluster: FakeCluster) -> Iterator[tuple[TopicView, list[tuple[str, int]]]]:
    seen: list[tuple[str, int]] = []
    for i in range(3):
        cluster.append(TOPICS.changelog, f"k{i}".encode(), b"v", partition=i % 2)
    view = TopicView(SETTINGS, TOPICS.changelog, lambda k, v, p, o: seen.append((k, o)), name="test")
    view.start(5)
    try:
        yield view, seen
    finally:
        view.stop()


def test_view_restarts_after_a_crash_and_resumes_at_its_applied_offsets(
    cluster: FakeCluster, view_records: tuple[TopicView, list[tuple[str, int]]]
) -> None:
    view, seen = view_records
    assert sorted(seen) == [("k0", 0), ("k1", 0), ("k2", 1)]
    first = cluster.consumers[-1]
    assert [tp.offset for tp in first.assigned_at] == [OFFSET_BEGINNING, OFFSET_BEGINNING]

    first.fail_polls.append(RuntimeError("consumer broke"))
    eventually(lambda: len(cluster.consumers) == 2)
    second = cluster.consumers[-1]
    eventually(lambda: bool(second.assigned_at))
    assert first.closed
    assert {tp.partition: tp.offset for tp in second.assigned_at} == {0: 2, 1: 1}  # applied, not 0

    cluster.append(TOPICS.changelog, b"k3", b"v", partition=1)
    eventually(lambda: ("k3", 1) in seen)
    view.wait_until(1, 1, timeout_s=2)
    assert len(seen) == 4  # nothing applied twice
    eventually(lambda: view.health() is None)


def test_view_wait_until_is_bounded_and_says_why(
    view_records: tuple[TopicView, list[tuple[str, int]]],
) -> None:
    view, _ = view_records
    with pytest.raises(TimeoutError, match=r"not seen after 0.2s"):
        view.wait_until(0, 10, timeout_s=0.2)


def test_view_waits_for_a_missing_topic_and_reports_it(cluster: FakeCluster) -> None:
    view = TopicView(SETTINGS, "not-yet", lambda *a: None, name="test")
    with pytest.raises(TimeoutError, match="waiting for Kafka to describe not-yet"):
        view.start(0.5)
    assert "waiting for Kafka" in (view.health() or "")
    cluster.create("not-yet")
    try:
        view.wait_ready(10)
        eventually(lambda: view.health() is None, 10)
    finally:
        view.stop()


# -- ResultsListener ------------------------------------------------------------------------------


async def test_results_tail_resumes_after_the_last_consumed_record(cluster: FakeCluster) -> None:
    cluster.append(TOPICS.results, b"old", result("inv_old"), partition=0)
    listener = ResultsListener(SETTINGS, asyncio.get_running_loop())
    await asyncio.to_thread(listener.start, 5)
    try:
        first = cluster.consumers[-1]
        assert {tp.partition: tp.offset for tp in first.assigned_at} == {0: 1, 1: 0}  # from the end

        a = listener.register("inv_a")
        cluster.append(TOPICS.results, b"a", result("inv_a"), partition=1)
        assert (await asyncio.wait_for(a, 5)).invocation_id == "inv_a"

        # The tail crashes; a result is written before the new consumer is up: it must arrive.
        b = listener.register("inv_b")
        first.fail_polls.append(RuntimeError("fetch broke"))
        cluster.append(TOPICS.results, b"b", result("inv_b"), partition=0)
        assert (await asyncio.wait_for(b, 5)).invocation_id == "inv_b"
        second = cluster.consumers[-1]
        assert second is not first
        assert {tp.partition: tp.offset for tp in second.assigned_at} == {0: 1, 1: 1}
        await eventually_async(lambda: listener.health() is None)
    finally:
        listener.stop()


async def test_results_tail_given_up_fails_waiters_and_new_registrations(
    cluster: FakeCluster, fatal_calls: list[tuple[str, str]]
) -> None:
    listener = ResultsListener(SETTINGS, asyncio.get_running_loop())
    listener._supervisor._max_failures = 2  # give up quickly  # noqa: SLF001
    listener._supervisor._backoff = (0.01, 0.01)  # noqa: SLF001
    await asyncio.to_thread(listener.start, 5)
    try:
        waiter = listener.register("inv_x")
        ack = listener.register_ack("inv_y")
        cluster.consumers[-1].fail_polls.append(RuntimeError("one"))
        await eventually_async(lambda: len(cluster.consumers) == 2)
        cluster.consumers[-1].fail_polls.append(RuntimeError("two"))
        with pytest.raises(Unavailable, match="the results tail gave up"):
            await asyncio.wait_for(waiter, 5)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(ack, 5)
        with pytest.raises(Unavailable):
            await listener.register("inv_z")
        await eventually_async(lambda: bool(fatal_calls))
        assert fatal_calls[0][0] == "results"
        assert "gave up" in (listener.health() or "")
    finally:
        listener.stop()


async def test_answers_reach_only_the_waiters_of_their_kind(cluster: FakeCluster) -> None:
    """An attach waiting for its invocation and a cancel of the same invocation: the cancel's
    answer must not be taken for the attach's (it was, and the ingress answered 500)."""
    from schemas.records import OutputNotReady

    listener = ResultsListener(SETTINGS, asyncio.get_running_loop())
    await asyncio.to_thread(listener.start, 5)
    try:
        attach = listener.register_ack("inv_a", OutputNotReady)
        cancel = listener.register_ack("inv_a", ManageAnswer)
        manage = ManageAnswer(invocation_id="inv_a", outcome=ManageOutcome.DONE)
        cluster.append(TOPICS.results, b"a", manage.encode(), partition=0)
        assert await asyncio.wait_for(cancel, 5) == manage
        assert not attach.done()
        cluster.append(TOPICS.results, b"a", OutputNotReady(invocation_id="inv_a").encode(), partition=0)
        assert isinstance(await asyncio.wait_for(attach, 5), OutputNotReady)
    finally:
        listener.stop()


# -- CommandClient --------------------------------------------------------------------------------


@pytest.fixture
async def client(cluster: FakeCluster) -> AsyncIterator[CommandClient]:
    client = CommandClient(SETTINGS, delivery_timeout_s=0.5)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def command() -> Command:
    body = ManageInvocation(invocation_id=str(new_id()), operation=ManageOperation.CANCEL)
    return Command(timestamp_ms=1, body=body)


async def test_a_fatal_delivery_error_recreates_the_producer(
    cluster: FakeCluster, client: CommandClient
) -> None:
    await client.send(new_id(), command())
    first = client.producer
    first.fail_deliveries.append(fatal_error("UNKNOWN_PRODUCER_ID after a broker restart"))  # type: ignore[attr-defined]
    with pytest.raises(Unavailable, match="UNKNOWN_PRODUCER_ID"):
        await client.send(new_id(), command())
    await eventually_async(lambda: client.producer is not first)
    assert first.purged  # type: ignore[attr-defined]
    await client.send(new_id(), command())  # the next request works
    assert (
        len(cluster.topics[TOPICS.commands][0]) + sum(len(p) for p in cluster.topics[TOPICS.commands][1:])
        == 2
    )
    await eventually_async(lambda: client.health() is None)


async def test_a_fatal_error_from_produce_recreates_the_producer(client: CommandClient) -> None:
    first = client.producer
    first.raise_on_produce = KafkaException(fatal_error("producer fenced"))  # type: ignore[attr-defined]
    with pytest.raises(Unavailable, match="producer fenced"):
        await client.send(new_id(), command())
    await eventually_async(lambda: client.producer is not first)
    await client.send(new_id(), command())


async def test_a_fatal_error_reported_only_to_error_cb_recreates_the_producer(client: CommandClient) -> None:
    first = client.producer
    first.config["error_cb"](fatal_error("idempotence state lost"))  # type: ignore[attr-defined]
    await eventually_async(lambda: client.producer is not first)
    await client.send(new_id(), command())


async def test_requests_in_flight_on_a_fatal_producer_fail_clearly(client: CommandClient) -> None:
    first = client.producer
    first.hold = True  # the record sits in the producer
    pending = asyncio.create_task(client.send(new_id(), command()))
    await asyncio.sleep(0.05)
    first.config["error_cb"](fatal_error("gone"))  # type: ignore[attr-defined]
    with pytest.raises(Unavailable, match="gone"):
        await asyncio.wait_for(pending, 5)


async def test_a_full_queue_is_unavailable_without_recreating(client: CommandClient) -> None:
    first = client.producer
    first.raise_on_produce = BufferError("queue full")  # type: ignore[attr-defined]
    with pytest.raises(Unavailable, match="queue is full"):
        await client.send(new_id(), command())
    assert client.producer is first


async def test_an_unacknowledged_command_ends_with_wait_timeout(client: CommandClient) -> None:
    client.producer.hold = True  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="did not acknowledge the command within 0.5s"):
        await client.send(new_id(), command())
    assert time.monotonic() - started < 5


async def test_health_reports_an_unreachable_broker_until_it_answers(client: CommandClient) -> None:
    producer = client.producer
    producer.hold = True  # type: ignore[attr-defined]
    producer.config["error_cb"](KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))  # type: ignore[attr-defined]
    assert "Kafka is unreachable" in (client.health() or "")
    producer.hold = False  # type: ignore[attr-defined]
    await eventually_async(lambda: client.health() is None)


async def test_results_arrive_through_the_client(cluster: FakeCluster, client: CommandClient) -> None:
    assert client.results is not None
    waiter = client.results.register_ack("inv_m")
    cluster.append(
        TOPICS.results, b"m", ManageAnswer(invocation_id="inv_m", outcome=ManageOutcome.DONE).encode()
    )
    assert (await asyncio.wait_for(waiter, 5)).outcome == ManageOutcome.DONE


# -- MetadataView ---------------------------------------------------------------------------------


async def test_metadata_write_recreates_a_fatal_producer(cluster: FakeCluster) -> None:
    view = MetadataView(SETTINGS, delivery_timeout_s=0.5, read_your_writes_timeout_s=2)
    await asyncio.to_thread(view.start)
    try:
        await view.write([("kafka-cluster/x", None)])
        first = cluster.producers[-1]
        first.fail_deliveries.append(fatal_error("out of order sequence"))
        with pytest.raises(Unavailable, match="out of order sequence"):
            await view.write([("kafka-cluster/y", None)])
        assert first.purged
        await view.write([("kafka-cluster/z", None)])  # a new producer, and read-your-writes again
        assert cluster.producers[-1] is not first
        assert [m.key() for m in cluster.topics[TOPICS.metadata][0]] == [
            b"kafka-cluster/x",
            b"kafka-cluster/z",
        ]
        assert view.health() is None
    finally:
        view.stop()


async def test_metadata_write_bounds(cluster: FakeCluster) -> None:
    view = MetadataView(SETTINGS, delivery_timeout_s=0.2, read_your_writes_timeout_s=0.3)
    await asyncio.to_thread(view.start)
    try:
        await view.write([("kafka-cluster/x", None)])
        cluster.producers[-1].hold = True
        with pytest.raises(WaitTimeout, match="did not acknowledge the registry write within 0.2s"):
            await view.write([("kafka-cluster/y", None)])
        cluster.producers[-1].hold = False
        cluster.producers[-1].pending.clear()
        # Kafka has the record but this process' view is stuck: read-your-writes is bounded too.
        tail = cluster.consumers[-1]
        tail.poll = lambda timeout=-1: time.sleep(0.01)  # type: ignore[method-assign,assignment,misc]
        with pytest.raises(WaitTimeout, match="not read back in time"):
            await view.write([("kafka-cluster/z", None)])
    finally:
        view.stop()


def test_fatal_error_classification_is_librdkafkas() -> None:
    err = fatal_error()
    assert err.fatal() and not err.retriable()
    assert not KafkaError(KafkaError._MSG_TIMED_OUT, "t").fatal()


def test_view_starts_at_the_offsets_a_local_copy_holds(cluster: FakeCluster) -> None:
    for i in range(4):
        cluster.append(TOPICS.changelog, f"k{i}".encode(), b"v", partition=0)
    seen: list[str] = []
    view = TopicView(SETTINGS, TOPICS.changelog, lambda k, v, p, o: seen.append(k), "test", applied={0: 3})
    view.start(5)
    try:
        assert {tp.partition: tp.offset for tp in cluster.consumers[-1].assigned_at} == {
            0: 3,
            1: OFFSET_BEGINNING,
        }
        assert seen == ["k3"] and view.applied()[0] == 4
    finally:
        view.stop()
