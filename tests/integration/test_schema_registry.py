"""Commands produced in the Confluent Schema Registry wire format on a real stack (Apache Kafka
from the session, admin, ingress, a processor, the example SDK services): an Invoke written with
confluent-kafka's AvroSerializer runs and its result is read from `results`; a record whose
schema id the registry does not know is dead-lettered with the reason; a record arriving while
the registry is down waits for it and runs once it is back.

The registry is a real one, Apicurio Registry (tests/support/apicurio.py), serving the Confluent
REST API to the serializer and to the processor."""

from __future__ import annotations

import json
import secrets
import struct
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_core.kafka import create_topics, producer_config
from schemas import codec
from schemas.ids import InvocationId
from schemas.partitioner import routing_key
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
from tests.conftest import free_port
from tests.support.apicurio import Apicurio, runner_jar_or_skip
from tests.support.processes import Component
from tests.support.sdk import run_sdk_deployment

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

pytestmark = pytest.mark.integration

PARTITIONS = 2


class Stack:
    def __init__(self, settings: Settings, registry: Apicurio, components: list[Component]) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.registry = registry
        self.components = components

    def logs(self) -> str:
        logs = [f"--- {c.name}:\n{c.log_text()[-4000:]}" for c in self.components]
        return "\n".join([*logs, f"--- schema registry:\n{self.registry.log_tail()}"])


@pytest.fixture(scope="session")
def registry_jar() -> Path:
    return runner_jar_or_skip()  # before the broker starts: a skip costs nothing


@pytest.fixture
def stack(registry_jar: Path, kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    admin_port, ingress_port = free_port(), free_port()
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    create_topics(settings)
    with ExitStack() as stop:
        registry = Apicurio(registry_jar, tmp_path)
        stop.callback(registry.stop)
        registry.start()
        env = {
            "KINVOKE_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KINVOKE_TOPIC_PREFIX": prefix,
            "KINVOKE_PARTITIONS": str(PARTITIONS),
            "KINVOKE_ADMIN_PORT": str(admin_port),
            "KINVOKE_INGRESS_PORT": str(ingress_port),
            "KINVOKE_PROCESSOR_GROUP_ID": f"{prefix}-processor",
            "KINVOKE_STATE_DIR": str(tmp_path / "state"),
            "KINVOKE_SCHEMA_REGISTRY_URL": registry.url,
        }
        components = [
            Component("admin", env, tmp_path, admin_port),
            Component("ingress", env, tmp_path, ingress_port),
            Component("processor", env, tmp_path),
        ]
        for c in components:
            stop.callback(c.stop)
            c.start(60)
        uri = stop.enter_context(run_sdk_deployment(log=tmp_path / "deployment.log"))
        reg = httpx.post(f"http://127.0.0.1:{admin_port}/deployments", json={"uri": uri}, timeout=30)
        assert reg.status_code == 201, reg.text
        yield Stack(settings, registry, components)


def _results_at_end(stack: Stack) -> Consumer:
    """A reader of `results` from its current end: it sees what is published from now on."""
    results = Consumer(
        {
            "bootstrap.servers": stack.settings.bootstrap_servers,
            "group.id": f"probe-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
        }
    )
    meta = results.list_topics(stack.topics.results, timeout=10).topics[stack.topics.results]
    ends = []
    for p in meta.partitions:
        tp = TopicPartition(stack.topics.results, p)
        _, high = results.get_watermark_offsets(tp, timeout=10, cached=False)
        ends.append(TopicPartition(stack.topics.results, p, high))
    results.assign(ends)
    return results


def _first(consumer: Consumer, key: bytes, stack: Stack, timeout_s: float = 60) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in consumer.consume(100, 0.2):
            if msg.error() is None and msg.key() == key:
                return msg.value() or b""
        for c in stack.components:
            assert c.proc is not None and c.proc.poll() is None, f"{c.name} exited\n{stack.logs()}"
    raise AssertionError(f"no record keyed {key!r} within {timeout_s}s\n{stack.logs()}")


def _unavailable_ids(stack: Stack) -> set[int]:
    """The schema ids the processor logged it could not fetch (the registry was unreachable)."""
    processor = next(c for c in stack.components if c.name == "processor")
    ids = set()
    for line in processor.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "schema_registry.unavailable":
            ids.add(entry["schema_id"])
    return ids


def _greet(name: str) -> tuple[InvocationId, Command]:
    inv = InvocationId.generate(secrets.randbits(64), int(time.time() * 1000), secrets.randbits(80))
    command = Command(
        timestamp_ms=int(time.time() * 1000),
        body=Invoke(
            invocation_id=str(inv),
            argument=f'"{name}"'.encode(),
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
            target=InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE),
            reply_to_results=True,
        ),
    )
    return inv, command


def test_an_avro_serializer_producer_invokes_and_unknown_ids_are_dead_lettered(stack: Stack) -> None:
    topics = stack.topics
    client = SchemaRegistryClient({"url": stack.registry.url})
    # The Command schema as kinvoke publishes it, registered under `<commands topic>-value`.
    serializer = AvroSerializer(client, codec.schema_json("kinvoke.Command"))
    inv, command = _greet("Kafka")
    value = serializer(command.to_avro(), SerializationContext(topics.commands, MessageField.VALUE))
    assert value is not None and codec.framing_of(value) == "confluent"
    assert stack.registry.subjects() == [f"{topics.commands}-value"]

    results = _results_at_end(stack)
    producer = Producer(producer_config(stack.settings))
    producer.produce(topics.commands, key=routing_key(inv.partition_key), value=value)
    unknown = b"\x00" + struct.pack(">I", 9999) + value[5:]
    producer.produce(topics.commands, key=b"unknown-schema", value=unknown)
    assert producer.flush(10) == 0

    result = InvocationResult.decode(_first(results, str(inv).encode(), stack))
    assert isinstance(result.result, Success) and result.result.value == b'"Hello Kafka"'
    assert f"GET /schemas/ids/{codec.confluent_schema_id(value)}" in stack.registry.requests()

    # A producer with a newer schema of its own (a field kinvoke does not have: a new id), then
    # the registry goes down: the record waits, it is neither lost nor dead-lettered, and runs
    # once the registry is back (its H2 file kept the schema).
    newer = json.loads(codec.schema_json("kinvoke.Command"))
    newer["fields"].append({"name": "producer", "type": "string", "default": ""})
    newer_serializer = AvroSerializer(client, json.dumps(newer))
    later, later_command = _greet("Outage")
    later_value = newer_serializer(
        {**later_command.to_avro(), "producer": "billing"},
        SerializationContext(topics.commands, MessageField.VALUE),
    )
    assert later_value is not None and codec.confluent_schema_id(later_value) != codec.confluent_schema_id(
        value
    )
    stack.registry.stop()
    producer.produce(topics.commands, key=routing_key(later.partition_key), value=later_value)
    assert producer.flush(10) == 0
    held = time.monotonic() + 4
    while time.monotonic() < held:
        for msg in results.consume(100, 0.2):
            assert msg.key() != str(later).encode(), "ran without its writer schema"
    later_id = codec.confluent_schema_id(later_value)
    assert later_id in _unavailable_ids(stack), stack.logs()
    stack.registry.start()
    try:
        result = InvocationResult.decode(_first(results, str(later).encode(), stack))
    finally:
        results.close()
    assert isinstance(result.result, Success) and result.result.value == b'"Hello Outage"'
    assert f"GET /schemas/ids/{later_id}" in stack.registry.requests()

    dlq = Consumer(
        {
            "bootstrap.servers": stack.settings.bootstrap_servers,
            "group.id": f"dlq-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    dlq.subscribe([topics.commands_dlq])
    deadline = time.monotonic() + 30
    dead_letters = []
    try:
        while time.monotonic() < deadline and not dead_letters:
            dead_letters += [m for m in dlq.consume(100, 0.5) if m.error() is None]
    finally:
        dlq.close()
    # Only the record with the unknown id: the one held during the outage is not among them.
    assert [m.key() for m in dead_letters] == [b"unknown-schema"], stack.logs()
    [dead] = dead_letters
    assert dead.value() == unknown
    reason = dict(dead.headers() or [])["kinvoke.dlq.reason"].decode()
    assert "schema id 9999 is not in the schema registry" in reason
