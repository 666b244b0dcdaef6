"""One transaction for every running task's records, committed or rolled back together."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from kafka_core.supervision import Unrecoverable
from processor import apply as apply_module
from processor.service import ProcessorService
from processor.task import TaskState
from schemas.records import InvocationPhase
from tests.unit.runtime.conftest import invocation_on, record, running_task
from tests.unit.runtime.fakes import FakeProducer
from tests.unit.state_machine.conftest import invoke


def _two_partitions(processor: ProcessorService) -> tuple[str, str]:
    a, b = invocation_on(0), invocation_on(1)
    processor.tasks.tasks[0] = running_task(0, start_offset=10)
    processor.tasks.tasks[1] = running_task(1, start_offset=20)
    return a, b


def _restored_again(processor: ProcessorService, offsets: dict[int, int]) -> None:
    """After a producer replacement every task restores again (paused, its attempts
    cancelled); then stands in for the restorer, which these tests do not run."""
    for p, offset in offsets.items():
        task = processor.tasks.tasks[p]
        assert task.state == TaskState.CREATED and task.store is None
        assert p in processor.consumer.paused and p in processor.invoker.cancelled  # type: ignore[union-attr,attr-defined]
        processor.tasks.tasks[p] = running_task(p, start_offset=offset)


def test_all_partitions_commit_in_one_transaction(processor: ProcessorService) -> None:
    a, b = _two_partitions(processor)
    processor.process([record(0, 10, invoke(inv=a)), record(1, 20, invoke(inv=b))])
    producer: FakeProducer = processor.producer  # type: ignore[assignment]
    assert producer.calls.count("begin_transaction") == 1 and producer.calls.count("commit_transaction") == 1
    [offsets] = producer.offsets
    assert sorted((tp.partition, tp.offset) for tp in offsets) == [(0, 11), (1, 21)]
    changelog = [r for r in producer.produced if r.topic == "t.changelog"]
    assert {r.partition for r in changelog} == {0, 1}  # co-partitioned with the command
    for p, inv in ((0, a), (1, b)):
        task = processor.tasks.tasks[p]
        assert task.store is not None and task.store.status(inv).phase == InvocationPhase.INVOKED  # type: ignore[union-attr]
        assert task.committed_offset == (11 if p == 0 else 21)
        assert task.store.kv.checkpoint(p) is not None  # the store committed with a checkpoint
    assert sorted(processor.invoker.invoked) == sorted([(0, a, 1), (1, b, 1)])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError.ILLEGAL_GENERATION, "stale generation", txn_requires_abort=True),
        KafkaError(KafkaError._TIMED_OUT, "slow", txn_requires_abort=True),
    ],
)
def test_an_abortable_error_rolls_back_and_rereads(processor: ProcessorService, error: KafkaError) -> None:
    a, b = _two_partitions(processor)
    producer: FakeProducer = processor.producer  # type: ignore[assignment]
    producer.fail["send_offsets_to_transaction"] = error
    batch = [record(0, 10, invoke(inv=a)), record(1, 20, invoke(inv=b))]
    processor.process(batch)
    assert "abort_transaction" in producer.calls and producer.produced == []
    assert processor.tasks.tasks[0].store.status(a) is None  # type: ignore[union-attr]
    assert sorted(processor.consumer.seeks) == [(0, 10), (1, 20)]  # type: ignore[union-attr]
    # Attempts start while the transaction commits; the aborted batch asked for them already.
    first = sorted(processor.invoker.invoked)  # type: ignore[attr-defined]
    assert first == sorted([(0, a, 1), (1, b, 1)])
    processor.process(batch)  # read again: applied once, the same attempts asked for again
    assert processor.tasks.tasks[0].store.status(a).phase == InvocationPhase.INVOKED  # type: ignore[union-attr]
    assert sorted(processor.invoker.invoked) == sorted(first * 2)  # type: ignore[attr-defined]


def test_a_fenced_producer_is_replaced_unless_it_keeps_being_fenced(processor: ProcessorService) -> None:
    """Our transactional id is ours alone: fenced means a transaction of ours timed out (we were
    stalled). Fenced again and again means someone else uses the id: stop, do not fence them back."""
    from processor import transactions

    a, _ = _two_partitions(processor)
    fenced = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    producers: list[FakeProducer] = []

    def fenced_producer(_conf: object) -> FakeProducer:
        producers.append(FakeProducer(fail={"commit_transaction": fenced}))
        return producers[-1]

    processor.txn._factory = fenced_producer  # type: ignore[assignment,union-attr]
    old: FakeProducer = processor.producer  # type: ignore[assignment]
    old.fail["commit_transaction"] = fenced
    processor.process([record(0, 10, invoke(inv=a))])
    assert producers[0].calls == ["init_transactions"] and processor.producer is producers[0]
    assert processor.tasks.tasks[0].store.status(a) is None  # type: ignore[union-attr]
    assert processor.consumer.seeks == [(0, 10)]  # type: ignore[union-attr]
    with pytest.raises(Unrecoverable, match="is another processor using this id"):
        for _ in range(transactions.MAX_REPLACEMENTS):
            processor.process([record(0, 10, invoke(inv=a))])  # the tasks restore first
            _restored_again(processor, {0: 10, 1: 20})
            processor.process([record(0, 10, invoke(inv=a))])


def test_a_fatal_producer_error_replaces_the_producer(processor: ProcessorService) -> None:
    a, _ = _two_partitions(processor)
    old: FakeProducer = processor.producer  # type: ignore[assignment]
    old.fail["commit_transaction"] = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "lost", fatal=True)
    fresh = FakeProducer()
    processor.txn._factory = lambda _conf: fresh  # type: ignore[assignment,return-value,union-attr]
    processor.process([record(0, 10, invoke(inv=a))])
    assert processor.producer is fresh and fresh.calls == ["init_transactions"]
    assert processor.consumer.seeks == [(0, 10)]  # type: ignore[union-attr]
    processor.process([record(0, 10, invoke(inv=a))])
    assert fresh.calls == ["init_transactions"]  # the tasks restore before anything is applied
    _restored_again(processor, {0: 10, 1: 20})
    processor.process([record(0, 10, invoke(inv=a))])
    assert processor.tasks.tasks[0].store.status(a) is not None  # type: ignore[union-attr]


def test_a_command_the_state_machine_fails_on_is_dead_lettered_on_the_retry(
    processor: ProcessorService, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = invocation_on(0, 0), invocation_on(0, 1)
    processor.tasks.tasks[0] = running_task(0, start_offset=5)
    real_apply = apply_module.state_machine.apply

    def flaky(store, command):  # type: ignore[no-untyped-def]
        if command.body.invocation_id == b:
            raise KeyError("a bug")
        return real_apply(store, command)

    monkeypatch.setattr(apply_module.state_machine, "apply", flaky)
    batch = [record(0, 5, invoke(inv=a)), record(0, 6, invoke(inv=b))]
    processor.process(batch)
    producer: FakeProducer = processor.producer  # type: ignore[assignment]
    assert "abort_transaction" in producer.calls and producer.produced == []
    assert processor.tasks.tasks[0].store.status(a) is None  # type: ignore[union-attr]  # a rolled back too
    processor.process(batch)
    [dead] = [r for r in producer.produced if r.topic == "t.commands.dlq"]
    headers = dict(dead.headers)
    assert b"a bug" in headers["kinvoke.dlq.reason"] and headers["kinvoke.dlq.offset"] == b"6"
    assert processor.tasks.tasks[0].store.status(a) is not None  # type: ignore[union-attr]
    assert processor.tasks.tasks[0].committed_offset == 7


def test_records_of_partitions_not_running_are_left_for_later(processor: ProcessorService) -> None:
    a = invocation_on(2)
    processor.process([record(2, 0, invoke(inv=a))])  # partition 2 is not ours (or still restoring)
    assert processor.producer.calls == []  # type: ignore[union-attr]


def test_timers_fire_through_the_log(processor: ProcessorService) -> None:
    from processor.state_machine import ScheduleTimer
    from schemas.records import Timer, TimerFired

    inv = invocation_on(0)
    task = running_task(0)
    processor.tasks.tasks[0] = task
    timer = Timer(invocation_id=inv, completion_id=1, wake_up_at_ms=1)
    processor._run_action(task, ScheduleTimer(timer))
    processor._fire_timers()
    [(partition, _key, command)] = processor.effects.appended  # type: ignore[attr-defined]
    assert partition == 0 and command.body == TimerFired(invocation_id=inv, completion_id=1, wake_up_at_ms=1)
    processor._fire_timers()
    assert len(processor.effects.appended) == 1  # type: ignore[attr-defined]  # fired once


def test_recovery_waits_until_the_partition_is_caught_up(processor: ProcessorService) -> None:
    inv = invocation_on(0)
    task = running_task(0, start_offset=0)
    processor.tasks.tasks[0] = task
    processor.process([record(0, 0, invoke(inv=inv))])
    processor.invoker.invoked.clear()  # type: ignore[attr-defined]
    # A new owner: the previous one left `inv` running and more records after offset 1.
    task.recovery_pending, task.start_offset, task.catch_up_offset = True, 1, 3
    processor.consumer.positions[0] = 2  # type: ignore[union-attr]
    processor._recover_caught_up()
    assert processor.invoker.invoked == []  # type: ignore[attr-defined]
    processor.consumer.positions[0] = 3  # type: ignore[union-attr]
    processor._recover_caught_up()
    assert processor.invoker.invoked == [(0, inv, 1)]  # type: ignore[attr-defined]


def test_after_an_outage_the_producer_is_replaced_before_the_next_transaction(
    processor: ProcessorService,
) -> None:
    from confluent_kafka import KafkaError as Err

    a, _ = _two_partitions(processor)
    old: FakeProducer = processor.producer  # type: ignore[assignment]
    fresh = FakeProducer()
    processor.txn._factory = lambda _conf: fresh  # type: ignore[assignment,return-value,union-attr]
    processor.txn._on_error(Err(Err._ALL_BROKERS_DOWN, "1/1 brokers are down"))  # type: ignore[union-attr]
    processor.process([record(0, 10, invoke(inv=a))])
    assert old.calls == ["purge"] and fresh.calls == ["init_transactions"]
    # What this processor holds may be ahead of Kafka (a confirmed commit lost in the outage):
    # every task restores from the stable committed offset before the next transaction.
    _restored_again(processor, {0: 10, 1: 20})
    processor.process([record(0, 10, invoke(inv=a))])
    assert fresh.calls[:2] == ["init_transactions", "begin_transaction"]
    assert processor.tasks.tasks[0].store.status(a) is not None  # type: ignore[union-attr]


def test_a_call_that_never_returns_abandons_the_producer(
    processor: ProcessorService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka may never answer send_offsets_to_transaction after an outage (#5456)."""
    import threading

    from processor import transactions

    monkeypatch.setattr(transactions, "CALL_DEADLINE_S", 0.2)
    a, _ = _two_partitions(processor)
    stuck = threading.Event()
    wedged: FakeProducer = processor.producer  # type: ignore[assignment]
    wedged.send_offsets_to_transaction = lambda *_a, **_k: stuck.wait(30)  # type: ignore[method-assign]
    fresh = FakeProducer()
    processor.txn._factory = lambda _conf: fresh  # type: ignore[assignment,return-value,union-attr]
    processor.process([record(0, 10, invoke(inv=a))])
    assert processor.producer is fresh and processor.consumer.seeks == [(0, 10)]  # type: ignore[union-attr]
    assert processor.tasks.tasks[0].store.status(a) is None  # type: ignore[union-attr]
    processor.process([record(0, 10, invoke(inv=a))])
    _restored_again(processor, {0: 10, 1: 20})
    processor.process([record(0, 10, invoke(inv=a))])
    assert processor.tasks.tasks[0].store.status(a) is not None  # type: ignore[union-attr]
    stuck.set()


def test_recovery_skips_attempts_the_new_owner_already_started(
    processor: ProcessorService,
) -> None:
    """Commands applied before catching up can start invocations; recovery must not run them again."""
    task = running_task(0, start_offset=0)
    task.recovery_pending, task.catch_up_offset = True, 5
    processor.tasks.tasks[0] = task
    fresh = invocation_on(0)
    processor.process([record(0, 0, invoke(inv=fresh))])
    assert processor.invoker.invoked == [(0, fresh, 1)]  # type: ignore[attr-defined]
    processor.consumer.positions[0] = 5  # type: ignore[union-attr]
    processor._recover_caught_up()
    assert processor.invoker.invoked == [(0, fresh, 1)]  # type: ignore[attr-defined]
    assert not task.recovery_pending and task.started == set()
