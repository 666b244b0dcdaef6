"""Shared fixtures for runtime tests: a processor wired to fake Kafka clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.service import ProcessorService
from processor.state_dir import StateDirectory
from processor.storage import PartitionStore
from processor.task import PartitionTask, TaskState
from schemas.ids import InvalidId, InvocationId
from schemas.partitioner import partition_of, routing_key
from schemas.records import Command
from schemas.registry import Registry
from schemas.settings import Settings
from tests.support.fake_kafka import FakeMessage
from tests.unit.runtime.fakes import FakeConsumer, FakeEffects, FakeInvoker, FakeProducer

PARTITIONS = 4
# Every loop commits (no hold): what most runtime tests look at, one transaction per batch.
SETTINGS = Settings(topic_prefix="t", partitions=PARTITIONS, processor_commit_hold_ms=0)


def invocation_on(partition: int, n: int = 0) -> str:
    """An invocation id whose partition key routes to `partition`."""
    found = 0
    for pk in range(10_000):
        if partition_of(pk, PARTITIONS) == partition:
            if found == n:
                return str(InvocationId.generate(pk, 1_700_000_000_000, 1000 + n))
            found += 1
    raise AssertionError("no partition key found")


def record(partition: int, offset: int, command: Command | bytes) -> FakeMessage:
    value = command if isinstance(command, bytes) else command.encode()
    key = None
    if isinstance(command, Command) and hasattr(command.body, "invocation_id"):
        try:
            key = routing_key(InvocationId.parse(command.body.invocation_id).partition_key)
        except InvalidId:
            key = b"?"
    return FakeMessage("t.commands", partition, offset, key, value)


class FakeMetadata:
    def registry(self) -> Registry:
        return Registry()

    def start(self) -> FakeMetadata:
        return self

    def stop(self) -> None:
        pass


def running_task(partition: int, start_offset: int = 0) -> PartitionTask:
    task = PartitionTask(partition, SETTINGS, None, state=TaskState.RUNNING, store=PartitionStore(partition))
    task.start_offset = task.committed_offset = start_offset
    task.recovery_pending = False
    return task


def make_processor(tmp_path: Path, settings: Settings = SETTINGS) -> ProcessorService:
    producer = FakeProducer()
    service = ProcessorService(
        settings,
        metadata=FakeMetadata(),  # type: ignore[arg-type]
        consumer_factory=lambda _conf: FakeConsumer(),  # type: ignore[arg-type,return-value]
        producer_factory=lambda _conf: producer,  # type: ignore[arg-type,return-value]
        state_dir=StateDirectory(tmp_path),
        effects=FakeEffects(),  # type: ignore[arg-type]
        invoker=FakeInvoker(),  # type: ignore[arg-type]
    )
    service.slot = service.state_dir.claim_slot()
    service.consumer = FakeConsumer()  # type: ignore[assignment]
    service.txn = service._transactional_producer()
    producer.calls.clear()  # init_transactions: not what the tests look at
    return service


@pytest.fixture
def processor(tmp_path: Path) -> ProcessorService:
    return make_processor(tmp_path)
