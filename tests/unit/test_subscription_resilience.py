"""Subscription consumers under failures (in-memory Kafka fake): a batch's Invokes, dead letters
and source offsets are one transaction; a failed transaction is aborted (or its producer replaced)
and the batch read again from the last committed offsets, so every record is written exactly
once; a crashed consumer is restarted with new clients and resumes from the committed offsets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaError

from processor import subscriptions as subs_mod
from processor.subscriptions import SubscriptionConsumer, SubscriptionRunner
from schemas.records import Command
from schemas.registry import HandlerRecord, KafkaClusterRecord, Registry, ServiceRecord, SubscriptionRecord
from schemas.settings import Settings
from schemas.topics import Topics
from tests.support.fake_kafka import FakeCluster, FakeConsumer, FakeProducer, fatal_error

SETTINGS = Settings(topic_prefix="unit")
TOPICS = Topics("unit")
COMMANDS = TOPICS.commands
GROUP = "orders-group"
TXN_ID = "unit-processor-p1-sub_1"
SUB = SubscriptionRecord(
    id="sub_1",
    source="kafka://ext/orders",
    sink="service://Greeter/greet",
    options={"group.id": GROUP},
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
    cluster.create(TOPICS.commands_dlq, 1)
    monkeypatch.setattr(subs_mod, "Consumer", cluster.consumer_factory)
    monkeypatch.setattr(subs_mod, "Producer", cluster.producer_factory)
    return cluster


@pytest.fixture
def metadata() -> FakeMetadata:
    return FakeMetadata()


@pytest.fixture
def consumer(cluster: FakeCluster, metadata: FakeMetadata) -> Iterator[SubscriptionConsumer]:
    c = SubscriptionConsumer(SETTINGS, SUB, metadata, TXN_ID)  # type: ignore[arg-type]
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


def committed(cluster: FakeCluster) -> dict[int, int]:
    return {p: o for (group, topic, p), o in cluster.committed.items() if (group, topic) == (GROUP, "orders")}


def started(cluster: FakeCluster) -> tuple[FakeConsumer, FakeProducer]:
    eventually(lambda: bool(cluster.producers) and "init_transactions" in cluster.producers[-1].calls)
    return cluster.consumers[-1], cluster.producers[-1]


def test_invokes_and_source_offsets_are_committed_in_one_transaction(
    cluster: FakeCluster, consumer: SubscriptionConsumer
) -> None:
    source, producer = started(cluster)
    assert producer.config["transactional.id"] == TXN_ID
    assert source.config["isolation.level"] == "read_committed"
    assert source.config["enable.auto.commit"] is False
    for i in range(3):
        cluster.append("orders", f"k{i}".encode(), b'"x"', partition=0)
    cluster.append("orders", b"k3", b'"y"', partition=1)
    eventually(lambda: committed(cluster) == {0: 3, 1: 1})
    assert invokes(cluster) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    # The offsets went through the producer's transaction, with the consumer's group metadata.
    assert "send_offsets_to_transaction" in producer.calls
    calls = [c for c in producer.calls if c != "init_transactions"]
    assert calls[-3:] == ["begin_transaction", "send_offsets_to_transaction", "commit_transaction"]
    assert consumer.transactions >= 1


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ("commit_transaction", KafkaError(KafkaError._STATE, "test: abortable", txn_requires_abort=True)),
        ("send_offsets_to_transaction", KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "test: rebalance")),
    ],
    ids=["abortable", "rebalance"],
)
def test_an_abortable_error_aborts_and_reads_the_batch_again(
    cluster: FakeCluster, consumer: SubscriptionConsumer, call: str, error: KafkaError
) -> None:
    source, producer = started(cluster)
    producer.fail_calls[call] = [error]
    for i in range(3):
        cluster.append("orders", f"k{i}".encode(), b'"x"', partition=1)
    eventually(lambda: committed(cluster) == {1: 3})
    assert "abort_transaction" in producer.calls
    assert ("orders", 1, 0) in source.seeks  # back to the last committed offset
    assert invokes(cluster) == [(1, 0), (1, 1), (1, 2)]  # each once: the aborted writes never count
    assert len(cluster.producers) == 1


@pytest.mark.parametrize(
    "error",
    [KafkaError(KafkaError._FENCED, "test: fenced", fatal=True), fatal_error("test: producer id lost")],
    ids=["fenced", "fatal"],
)
def test_a_fenced_or_fatal_producer_is_replaced_and_the_batch_read_again(
    cluster: FakeCluster, consumer: SubscriptionConsumer, error: KafkaError
) -> None:
    source, producer = started(cluster)
    producer.fail_calls["send_offsets_to_transaction"] = [error]
    cluster.append("orders", b"k0", b'"x"', partition=0)
    cluster.append("orders", b"k1", b'"x"', partition=0)
    eventually(lambda: committed(cluster) == {0: 2})
    assert len(cluster.producers) == 2  # replaced, with the same transactional id
    assert cluster.producers[1].config["transactional.id"] == TXN_ID
    assert "abort_transaction" not in producer.calls  # init_transactions of the new one aborts
    assert ("orders", 0, 0) in source.seeks
    assert invokes(cluster) == [(0, 0), (0, 1)]


def test_after_an_outage_the_batch_is_read_again_from_the_committed_offsets(
    cluster: FakeCluster, consumer: SubscriptionConsumer
) -> None:
    """Kafka lost a transaction whose commit it had confirmed (seen on a broker restart): the
    consumer's position is past records whose Invokes are gone. After the outage the producer is
    replaced and the consumer reads again from what Kafka has committed."""
    source, producer = started(cluster)
    cluster.append("orders", b"k0", b'"x"', partition=0)
    cluster.append("orders", b"k1", b'"x"', partition=0)
    eventually(lambda: committed(cluster) == {0: 2})
    cluster.committed[(GROUP, "orders", 0)] = 1  # the second commit was lost
    producer.config["error_cb"](KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    eventually(lambda: len(cluster.producers) == 2 and committed(cluster) == {0: 2})
    assert ("orders", 0, 1) in source.seeks
    assert invokes(cluster).count((0, 1)) == 2  # written again (the same invocation id: runs once)


def test_a_record_without_a_target_is_dead_lettered_with_its_offset(
    cluster: FakeCluster, consumer: SubscriptionConsumer, metadata: FakeMetadata
) -> None:
    started(cluster)
    cluster.append("orders", b"k0", b'"x"', partition=0)
    eventually(lambda: committed(cluster) == {0: 1})
    del metadata.registry().services["Greeter"]  # removed after the subscription was made
    cluster.append("orders", b"k1", b'"gone"', partition=0)
    eventually(lambda: committed(cluster) == {0: 2})
    assert invokes(cluster) == [(0, 0)]
    [dead] = cluster.topics[TOPICS.commands_dlq][0]
    assert dead.key() == b"k1" and dead.value() == b'"gone"'
    headers = {name: value.decode() for name, value in dead.headers() or []}
    assert headers == {
        "kinvoke.dlq.reason": "subscription sub_1: the target service Greeter does not exist",
        "kinvoke.dlq.topic": "orders",
        "kinvoke.dlq.partition": "0",
        "kinvoke.dlq.offset": "1",
        "kinvoke.dlq.subscription": "sub_1",
    }


def test_a_dead_letter_of_an_aborted_batch_is_not_written(
    cluster: FakeCluster, consumer: SubscriptionConsumer, metadata: FakeMetadata
) -> None:
    _, producer = started(cluster)
    metadata.registry().services["Greeter"].handlers = []  # the handler is missing
    producer.fail_calls["commit_transaction"] = [
        KafkaError(KafkaError._STATE, "test: abortable", txn_requires_abort=True)
    ]
    cluster.append("orders", b"k0", b'"x"', partition=1)
    eventually(lambda: committed(cluster) == {1: 1})
    [dead] = cluster.topics[TOPICS.commands_dlq][0]  # once, though the batch was written twice
    reason = dict(dead.headers() or [])["kinvoke.dlq.reason"]
    assert reason == b"subscription sub_1: the target service Greeter has no handler greet"


def test_a_topic_on_another_cluster_commits_its_offsets_after_the_transaction(
    cluster: FakeCluster, metadata: FakeMetadata
) -> None:
    cluster.consumer_cluster_id = "another-cluster"
    c = SubscriptionConsumer(SETTINGS, SUB, metadata, TXN_ID)  # type: ignore[arg-type]
    c.start()
    try:
        source, producer = started(cluster)
        cluster.append("orders", b"k0", b'"x"', partition=0)
        eventually(lambda: committed(cluster) == {0: 1})
        assert invokes(cluster) == [(0, 0)]
        assert "commit_transaction" in producer.calls
        assert "send_offsets_to_transaction" not in producer.calls
        # A failed commit (a rebalance, say) is not a crash: the next batch's commit covers it.
        source.fail_commits.append(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "test: rebalance"))
        cluster.append("orders", b"k1", b'"x"', partition=0)
        eventually(lambda: invokes(cluster) == [(0, 0), (0, 1)] and not source.fail_commits)
        assert committed(cluster) == {0: 1}
        cluster.append("orders", b"k2", b'"x"', partition=0)
        eventually(lambda: committed(cluster) == {0: 3})
        assert len(cluster.consumers) == 1 and c.health() is None
    finally:
        c.stop()


def test_a_crashed_subscription_consumer_restarts_and_resumes(
    cluster: FakeCluster, consumer: SubscriptionConsumer
) -> None:
    for i in range(3):
        cluster.append("orders", f"k{i}".encode(), b'"x"', partition=0)
    eventually(lambda: len(invokes(cluster)) == 3)
    first = cluster.consumers[-1]
    first.fail_polls.append(RuntimeError("consumer broke"))
    eventually(lambda: len(cluster.consumers) == 2)
    assert first.closed and committed(cluster) == {0: 3}
    second = cluster.consumers[-1]
    eventually(lambda: len(cluster.producers) == 2)  # the producer is new too, with the same id
    assert cluster.producers[1].config["transactional.id"] == TXN_ID
    eventually(lambda: bool(second.assigned_at))
    assert {tp.partition: tp.offset for tp in second.assigned_at} == {0: 3, 1: 0}
    cluster.append("orders", b"k3", b'"y"', partition=0)
    eventually(lambda: (0, 3) in invokes(cluster))
    assert invokes(cluster) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    eventually(lambda: consumer.health() is None)


def test_runner_restarts_its_reconcile_loop(
    cluster: FakeCluster, metadata: FakeMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = SubscriptionRunner(SETTINGS, metadata, lambda: "unit-processor-p1")  # type: ignore[arg-type]
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
        eventually(lambda: bool(cluster.producers))
        assert cluster.producers[0].config["transactional.id"] == "unit-processor-p1-sub_1"
    finally:
        runner.stop()
    assert cluster.consumers[0].closed


def test_runner_restarts_a_subscription_whose_cluster_changed_and_stops_an_orphan(
    cluster: FakeCluster, metadata: FakeMetadata
) -> None:
    """`PATCH /kafka-clusters/{name}` takes effect on the running consumers; a forced removal of
    the cluster interrupts its subscriptions (as on Restate) until the cluster is back."""
    runner = SubscriptionRunner(SETTINGS, metadata, lambda: "unit-processor-p1")  # type: ignore[arg-type]
    clusters = metadata.registry().clusters
    try:
        runner._reconcile()  # noqa: SLF001 - one step of the loop, deterministic
        assert len(cluster.consumers) == 1
        assert cluster.consumers[0].config["bootstrap.servers"] == "ext:9092"
        runner._reconcile()  # noqa: SLF001
        assert len(cluster.consumers) == 1 and not cluster.consumers[0].closed  # nothing changed

        clusters["ext"] = clusters["ext"].model_copy(
            update={"properties": {"bootstrap.servers": "ext2:9092"}}
        )
        runner._reconcile()  # noqa: SLF001
        assert cluster.consumers[0].closed and len(cluster.consumers) == 2
        assert cluster.consumers[1].config["bootstrap.servers"] == "ext2:9092"

        saved = clusters.pop("ext")
        runner._reconcile()  # noqa: SLF001
        assert cluster.consumers[1].closed and len(cluster.consumers) == 2
        runner._reconcile()  # noqa: SLF001 - no retry loop for an orphan
        assert len(cluster.consumers) == 2

        clusters["ext"] = saved
        runner._reconcile()  # noqa: SLF001
        assert len(cluster.consumers) == 3 and not cluster.consumers[2].closed
    finally:
        runner.stop()
