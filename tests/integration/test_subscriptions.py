"""Kafka, both ways, end to end (real broker, real SDK deployments): records of a user topic
invoke handlers exactly once, across a processor killed mid-way, and those without a target are
dead-lettered; commands produced directly run (the README's example, result read back) or are
dead-lettered when they cannot belong to their partition."""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets
import threading
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_core.kafka import read_to_end
from schemas.ids import InvocationId, partition_key_of
from schemas.partitioner import partition_of, routing_key
from schemas.records import (
    Command,
    InvocationResult,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
    Success,
)
from schemas.settings import Settings
from schemas.topics import Topics
from tests.integration.test_walking_skeleton import (
    PARTITIONS,
    _consume_one,
    cluster,  # noqa: F401 - the shared fixture
)
from tests.support.processes import REPO, Component
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration


def test_subscription_invokes_an_object_per_record(
    cluster: dict[str, Component],  # noqa: F811
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    admin = f"http://127.0.0.1:{cluster['admin'].port}"
    ingress = f"http://127.0.0.1:{cluster['ingress'].port}"
    topic = f"{topic_prefix}.orders"
    kafka_admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    kafka_admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)
    with run_sdk_deployment() as uri, httpx.Client(timeout=30) as client:
        assert client.post(f"{admin}/deployments", json={"uri": uri}).status_code == 201
        created = client.post(
            f"{admin}/kafka-clusters",
            json={"name": "local", "properties": {"bootstrap.servers": kafka_bootstrap}},
        )
        assert created.status_code == 201, created.text
        missing = client.post(
            f"{admin}/subscriptions", json={"source": "kafka://nope/x", "sink": "service://Counter/add"}
        )
        assert missing.status_code == 400 and "nope" in missing.json()["message"]
        sub = client.post(
            f"{admin}/subscriptions",
            json={
                "source": f"kafka://local/{topic}",
                "sink": "service://Counter/add",
                "options": {"auto.offset.reset": "earliest"},
            },
        )
        assert sub.status_code == 201, sub.text
        sub_id = sub.json()["id"]
        assert sub_id.startswith("sub_1") and sub.json()["options"]["group.id"] == sub_id
        listed = client.get(f"{admin}/subscriptions", params={"sink": "service://Counter/add"}).json()
        assert [s["id"] for s in listed["subscriptions"]] == [sub_id]

        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for key, value in [("s1", 1), ("s1", 2), ("s2", 10), ("s1", 3)]:
            producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
        assert producer.flush(10) == 0

        deadline = time.monotonic() + 30
        while client.get(f"{ingress}/Counter/s1/get").json() != 6:
            assert time.monotonic() < deadline, client.get(f"{ingress}/Counter/s1/get").text
            time.sleep(0.2)
        assert client.get(f"{ingress}/Counter/s2/get").json() == 10
        rows = client.post(
            f"{admin}/query",
            json={
                "query": "SELECT target, invoked_by, invoked_by_subscription_id FROM sys_invocation "
                "WHERE invoked_by = 'subscription' ORDER BY target"
            },
            headers={"accept": "application/json"},
        ).json()["rows"]
        assert len(rows) == 4 and {r["invoked_by_subscription_id"] for r in rows} == {sub_id}

        assert client.delete(f"{admin}/subscriptions/{sub_id}").status_code == 202
        assert client.get(f"{admin}/subscriptions/{sub_id}").status_code == 404


def _wait(what: str, check: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not reached within {timeout_s}s: {what}"
        time.sleep(0.2)


def _headers(msg: object) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in msg.headers() or []}  # type: ignore[attr-defined]


def test_subscriptions_are_exactly_once_across_a_processor_kill_and_dead_letter_missing_targets(
    cluster: dict[str, Component],  # noqa: F811
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    admin = f"http://127.0.0.1:{cluster['admin'].port}"
    ingress = f"http://127.0.0.1:{cluster['ingress'].port}"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, partitions=PARTITIONS)
    topics = Topics(topic_prefix)
    topic, source_partitions, records = f"{topic_prefix}.events", 3, 240
    keys = [f"k{i}" for i in range(6)]
    kafka_admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    kafka_admin.create_topics([NewTopic(topic, source_partitions, 1)])[topic].result(15)
    # A dead member's partitions move after its session timeout: the broker's minimum, not 45 s.
    options = {"auto.offset.reset": "earliest", "session.timeout.ms": "6000"}
    with (
        run_sdk_deployment() as uri,
        run_sdk_deployment("examples.python.compat_services:app") as compat_uri,
        httpx.Client(timeout=30) as client,
    ):
        assert client.post(f"{admin}/deployments", json={"uri": uri}).status_code == 201
        compat = client.post(f"{admin}/deployments", json={"uri": compat_uri})
        assert compat.status_code == 201, compat.text
        created = client.post(
            f"{admin}/kafka-clusters",
            json={"name": "local", "properties": {"bootstrap.servers": kafka_bootstrap}},
        )
        assert created.status_code == 201, created.text
        source = f"kafka://local/{topic}"
        # Echo exists when this subscription is made, and is removed with its deployment after.
        orphan = client.post(
            f"{admin}/subscriptions",
            json={"source": source, "sink": "service://Echo/length", "options": options},
        )
        assert orphan.status_code == 201, orphan.text
        gone = client.delete(f"{admin}/deployments/{compat.json()['id']}", params={"force": "true"})
        assert gone.status_code == 202, gone.text
        counting = client.post(
            f"{admin}/subscriptions",
            json={"source": source, "sink": "service://Counter/add", "options": options},
        )
        assert counting.status_code == 201, counting.text
        orphan_id, counting_id = orphan.json()["id"], counting.json()["id"]

        # The processor applies the registry in order: once it runs the second subscription, it
        # knows Echo is gone.
        def running(sub_id: str) -> bool:
            log = cluster["processor"].log_text().splitlines()
            return any(sub_id in line and "subscription.started" in line for line in log)

        _wait("both subscriptions run", lambda: running(orphan_id) and running(counting_id))

        def produce() -> None:
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            for i in range(records):
                producer.produce(topic, key=keys[i % len(keys)].encode(), value=b"1")
                if i % 20 == 19:
                    producer.flush(10)
                    time.sleep(0.05)
            assert producer.flush(10) == 0

        writer = threading.Thread(target=produce)
        writer.start()
        time.sleep(0.5)  # records are flowing: some batches committed, one likely open
        cluster["processor"].kill()
        cluster["processor"].start()
        writer.join(30)
        assert not writer.is_alive()

        def total() -> int:
            return sum(client.get(f"{ingress}/Counter/{k}/get", timeout=30).json() for k in keys)

        _wait(f"the counters add up to {records}", lambda: total() == records, timeout_s=120)
        assert [client.get(f"{ingress}/Counter/{k}/get").json() for k in keys] == [records // len(keys)] * 6

    sources = sorted(
        (m.partition(), m.offset()) for m in read_to_end(settings, topic, list(range(source_partitions)))
    )
    assert len(sources) == records
    # Exactly once in `commands` itself (read_committed), not only deduplicated by the state machine.
    invoked = []
    for msg in read_to_end(settings, topics.commands, list(range(PARTITIONS))):
        body = Command.decode(msg.value()).body
        if isinstance(body, Invoke) and body.invoked_by.subscription_id == counting_id:
            h = {x.name: x.value for x in body.headers}
            invoked.append((int(h["kafka.partition"]), int(h["kafka.offset"])))
    assert sorted(invoked) == sources
    dead = [_headers(m) for m in read_to_end(settings, topics.commands_dlq, [0])]
    dead = [h for h in dead if h.get("kinvoke.dlq.subscription") == orphan_id]
    assert sorted((int(h["kinvoke.dlq.partition"]), int(h["kinvoke.dlq.offset"])) for h in dead) == sources
    assert {h["kinvoke.dlq.topic"] for h in dead} == {topic}
    assert {h["kinvoke.dlq.reason"] for h in dead} == {
        f"subscription {orphan_id}: the target service Echo does not exist"
    }
    # Both groups committed every source offset.
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic_prefix}-probe"})
    try:
        ends = [
            probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(source_partitions)
        ]
        for group in (counting_id, orphan_id):
            reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
            try:
                offsets = reader.committed(
                    [TopicPartition(topic, p) for p in range(source_partitions)], timeout=10
                )
            finally:
                reader.close()
            assert [tp.offset for tp in offsets] == ends, group
    finally:
        probe.close()


def _readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Producing commands directly", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_direct_produce_example_runs_and_reads_its_result_back(
    cluster: dict[str, Component],  # noqa: F811
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    admin = f"http://127.0.0.1:{cluster['admin'].port}"
    ingress = f"http://127.0.0.1:{cluster['ingress'].port}"
    topics = Topics(topic_prefix)
    code = _readme_example()
    for readme, here in [
        ("127.0.0.1:9092", kafka_bootstrap),
        ('"kinvoke.commands"', f'"{topics.commands}"'),
        ("http://127.0.0.1:8080", ingress),
    ]:
        assert readme in code
        code = code.replace(readme, here)
    with run_sdk_deployment() as uri, httpx.Client(timeout=30) as client:
        assert client.post(f"{admin}/deployments", json={"uri": uri}).status_code == 201
        out = io.StringIO()
        scope: dict[str, object] = {}
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
        assert out.getvalue() == "Hello Kafka\n"
        inv = str(scope["inv"])
        # reply_to_results: the outcome is on `results` too, keyed by the id.
        published = _consume_one(kafka_bootstrap, topics.results, lambda m: m.key() == inv.encode())
        result = InvocationResult.decode(published.value())
        assert isinstance(result.result, Success) and json.loads(result.result.value) == "Hello Kafka"

        # Commands that cannot belong where they arrived are dead-lettered with the reason.
        def invoke(invocation_id: InvocationId, target: InvocationTarget) -> bytes:
            body = Invoke(
                invocation_id=str(invocation_id),
                target=target,
                argument=b"5",
                invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
            )
            return Command(timestamp_ms=int(time.time() * 1000), body=body).encode()

        now = int(time.time() * 1000)
        greeter = InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE)
        misrouted = InvocationId.generate(secrets.randbits(64), now, secrets.randbits(80))
        owner = partition_of(misrouted.partition_key, PARTITIONS)
        alice = InvocationTarget(
            service="Counter", handler="add", key="alice", service_ty=ServiceType.VIRTUAL_OBJECT
        )
        unkeyed = InvocationId.generate(partition_key_of("alice") ^ 1, now, secrets.randbits(80))
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
        producer.produce(
            topics.commands,
            key=routing_key(misrouted.partition_key),
            value=invoke(misrouted, greeter),
            partition=(owner + 1) % PARTITIONS,
        )
        producer.produce(
            topics.commands, key=routing_key(unkeyed.partition_key), value=invoke(unkeyed, alice)
        )
        assert producer.flush(10) == 0
        for invocation_id, reason in [
            (
                misrouted,
                f"belongs to partition {owner} (its partition key), "
                f"not to partition {(owner + 1) % PARTITIONS}",
            ),
            (unkeyed, "does not carry the partition key of Counter/alice"),
        ]:
            dead = _consume_one(
                kafka_bootstrap,
                topics.commands_dlq,
                lambda m, i=invocation_id: Command.decode(m.value()).body.invocation_id == str(i),
            )
            assert reason in _headers(dead)["kinvoke.dlq.reason"]
            assert _headers(dead)["kinvoke.dlq.topic"] == topics.commands
        # Neither ran: alice's counter is untouched, the misrouted id is unknown.
        assert client.get(f"{ingress}/Counter/alice/get").json() == 0
        unknown = client.get(f"{ingress}/restate/invocation/{misrouted}/output")
        assert unknown.status_code == 404, unknown.text
