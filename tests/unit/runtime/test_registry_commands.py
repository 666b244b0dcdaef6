"""The processor and commands in the Confluent Schema Registry wire format: an unknown schema id
is dead-lettered with the reason; a registry that cannot answer holds that partition at the
record (paused, read again later) while the records before it and other partitions commit.
`kinvoke replay` and `kinvoke topics tail` read them too."""

from __future__ import annotations

import io
import json
import struct
import warnings
from typing import Any

import fastavro
import httpx
import pytest

from kafka_core.inspect import human_record
from kafka_core.schema_registry import RegistryUnavailable, WriterSchemas
from processor import replay
from processor.decoding import CommandDecoder
from processor.replay import ReplayReport
from processor.service import ProcessorService
from schemas import codec
from schemas.records import Command, InvocationPhase
from tests.unit.runtime.conftest import invocation_on, record, running_task
from tests.unit.runtime.fakes import FakeProducer
from tests.unit.state_machine.conftest import invoke

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

SCHEMA_ID = 7


class FakeRegistryClient:
    """Answers like confluent-kafka's SchemaRegistryClient: the Command schema under SCHEMA_ID,
    404 for other ids, the HTTP library's connection error while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.asked: list[int] = []

    def get_schema(self, schema_id: int) -> Schema:
        self.asked.append(schema_id)
        if self.down:
            raise httpx.ConnectError("connection refused")
        if schema_id != SCHEMA_ID:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found")
        return Schema(codec.schema_json("kinvoke.Command"), "AVRO")

    def get_version(self, subject_name: str, version: int) -> Any:
        raise AssertionError("no references here")


def _confluent(command: Command, schema_id: int = SCHEMA_ID) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", schema_id))
    writer = fastavro.parse_schema(json.loads(codec.schema_json("kinvoke.Command")))
    fastavro.schemaless_writer(buf, writer, command.to_avro())
    return buf.getvalue()


def _with_registry(processor: ProcessorService) -> FakeRegistryClient:
    client = FakeRegistryClient()
    processor.decoder = CommandDecoder(WriterSchemas(client))
    return client


def _reasons(producer: FakeProducer) -> list[str]:
    return [
        dict(r.headers)["kinvoke.dlq.reason"].decode()
        for r in producer.produced
        if r.topic == "t.commands.dlq"
    ]


def test_a_command_from_a_registry_producer_is_applied(processor: ProcessorService) -> None:
    _with_registry(processor)
    inv = invocation_on(0)
    processor.tasks.tasks[0] = running_task(0, start_offset=10)
    processor.process([record(0, 10, _confluent(invoke(inv=inv)))])
    task = processor.tasks.tasks[0]
    assert task.store is not None and task.store.status(inv).phase == InvocationPhase.INVOKED  # type: ignore[union-attr]
    assert _reasons(processor.producer) == []  # type: ignore[arg-type]


def test_an_unknown_schema_id_is_dead_lettered_with_the_reason(processor: ProcessorService) -> None:
    _with_registry(processor)
    processor.tasks.tasks[0] = running_task(0, start_offset=10)
    processor.process([record(0, 10, _confluent(invoke(inv=invocation_on(0)), schema_id=99))])
    [reason] = _reasons(processor.producer)  # type: ignore[arg-type]
    assert reason == "not a kinvoke command: schema id 99 is not in the schema registry (Schema 99 not found)"
    assert processor.tasks.tasks[0].committed_offset == 11


def test_a_registry_outage_holds_the_partition_at_the_record(processor: ProcessorService) -> None:
    client = _with_registry(processor)
    client.down = True
    a0, a1, a2, b = invocation_on(0, 0), invocation_on(0, 1), invocation_on(0, 2), invocation_on(1)
    processor.tasks.tasks[0] = running_task(0, start_offset=10)
    processor.tasks.tasks[1] = running_task(1, start_offset=20)
    processor.process(
        [
            record(0, 10, invoke(inv=a0)),
            record(0, 11, _confluent(invoke(inv=a1))),
            record(0, 12, invoke(inv=a2)),
            record(1, 20, invoke(inv=b)),
        ]
    )
    producer: FakeProducer = processor.producer  # type: ignore[assignment]
    [offsets] = producer.offsets
    assert sorted((tp.partition, tp.offset) for tp in offsets) == [(0, 11), (1, 21)]
    assert _reasons(producer) == []  # neither lost nor dead-lettered
    store = processor.tasks.tasks[0].store
    assert store is not None and store.status(a0) is not None and store.status(a2) is None
    assert processor.consumer.paused == {0}  # type: ignore[union-attr]

    # Records of the held partition fetched before the pause are left for later.
    processor.process([record(0, 11, _confluent(invoke(inv=a1)))])
    assert len(producer.offsets) == 1

    # Once due it is read again from the held record; the registry answers now.
    client.down = False
    processor._held[0] = 0.0  # due
    processor._release_held()
    assert processor.consumer.paused == set()  # type: ignore[union-attr]
    assert processor.consumer.seeks[-1] == (0, 11)  # type: ignore[union-attr]
    assert processor.decoder.schemas is not None
    processor.decoder.schemas._down_until = 0.0  # past the client's backoff
    processor.process([record(0, 11, _confluent(invoke(inv=a1))), record(0, 12, invoke(inv=a2))])
    assert store.status(a1) is not None and store.status(a2) is not None
    assert processor.tasks.tasks[0].committed_offset == 13


# -- the tools that read the log ---------------------------------------------------------------


def test_replay_reads_registry_framed_commands_as_the_processor_did() -> None:
    client = FakeRegistryClient()
    decode = CommandDecoder(WriterSchemas(client)).decode_fetching
    inv = invocation_on(0)
    report = ReplayReport(0)
    records = [
        (0, _confluent(invoke(inv=inv))),
        (1, _confluent(invoke(inv=invocation_on(0, 1)), schema_id=99)),
    ]
    applied = list(replay.apply_records(report, records, 4, decode))
    assert applied[0].skipped is None and applied[0].command == invoke(inv=inv)
    assert applied[1].skipped == {
        "undecodable": "schema id 99 is not in the schema registry (Schema 99 not found)"
    }
    assert report.store.status(inv) is not None


def test_replay_stops_rather_than_skip_when_the_registry_cannot_answer() -> None:
    client = FakeRegistryClient()
    client.down = True
    decode = CommandDecoder(WriterSchemas(client)).decode_fetching
    with pytest.raises(RegistryUnavailable, match="schema id 7"):
        list(
            replay.apply_records(ReplayReport(0), [(0, _confluent(invoke(inv=invocation_on(0))))], 4, decode)
        )


def test_topics_tail_decodes_registry_framed_commands() -> None:
    data = _confluent(invoke(inv=invocation_on(0)))
    rec = human_record(
        "commands", "t.commands", 0, 0, None, None, data, None, WriterSchemas(FakeRegistryClient())
    )
    assert rec.kind == "Invoke" and rec.value["invocation_id"] == invocation_on(0)
    without = human_record("commands", "t.commands", 0, 0, None, None, data)
    assert without.kind == "undecodable" and "KINVOKE_SCHEMA_REGISTRY_URL" in without.value["error"]
