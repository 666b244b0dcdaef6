"""Commands that cannot belong to the partition are dead-lettered with the reason."""

from __future__ import annotations

from processor.apply import apply_records
from schemas.ids import InvocationId, partition_key_of
from schemas.records import Command, InvocationTarget, Invoke, InvokedBy, InvokedByKind, ServiceType
from tests.unit.runtime.conftest import invocation_on, record, running_task
from tests.unit.runtime.fakes import FakeProducer
from tests.unit.state_machine.conftest import invoke


def _dead_letters(task_partition: int, *messages) -> list[str]:  # type: ignore[no-untyped-def]
    task = running_task(task_partition)
    producer = FakeProducer()
    producer.begin_transaction()
    actions = apply_records(task, list(messages), producer).actions
    producer.commit_transaction()
    assert actions == [] and task.store is not None and task.store.statuses() == []
    return [
        dict(r.headers)["kinvoke.dlq.reason"].decode()
        for r in producer.produced
        if r.topic == "t.commands.dlq"
    ]


def test_undecodable_malformed_and_misrouted_commands() -> None:
    malformed = invoke(inv="inv_1" + "!" * 10)
    reasons = _dead_letters(
        0,
        record(0, 0, b"not avro"),
        record(0, 1, malformed),
        record(0, 2, invoke(inv=invocation_on(1))),
    )
    assert reasons[0].startswith("not a kinvoke command")
    assert reasons[1].startswith("malformed invocation id")
    assert "belongs to partition 1" in reasons[2]


def test_an_object_invocation_must_carry_its_keys_partition_key() -> None:
    right_pk = partition_key_of("alice")
    wrong = InvocationId.generate(right_pk + 1, 1_700_000_000_000, 1)
    from schemas.partitioner import partition_of

    partition = partition_of(wrong.partition_key, 4)
    cmd = Command(
        timestamp_ms=1,
        body=Invoke(
            invocation_id=str(wrong),
            target=InvocationTarget(
                service="Counter", handler="add", key="alice", service_ty=ServiceType.VIRTUAL_OBJECT
            ),
            argument=b"1",
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        ),
    )
    [reason] = _dead_letters(partition, record(partition, 0, cmd))
    assert "does not carry the partition key of Counter/alice" in reason


def test_a_restart_as_new_must_keep_the_partition_key() -> None:
    from schemas.records import InvocationOperation, OperateInvocation

    old = InvocationId.parse(invocation_on(0))
    elsewhere = InvocationId.generate(old.partition_key + 1, 1_700_000_000_000, 2)
    cmd = Command(
        timestamp_ms=1,
        body=OperateInvocation(
            invocation_id=str(old),
            operation=InvocationOperation.RESTART_AS_NEW,
            new_invocation_id=str(elsewhere),
        ),
    )
    [reason] = _dead_letters(0, record(0, 0, cmd))
    assert "does not carry the partition key" in reason
