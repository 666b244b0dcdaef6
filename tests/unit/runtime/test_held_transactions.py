"""A transaction held open while its attempts run: their outcomes commit with the invocations that
started them, and nothing anyone waits for is held back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from processor.apply import Applied
from processor.open_transaction import OpenTransaction
from processor.service import ProcessorService
from processor.state_machine import Action, InvokeAttempt, ScheduleTimer
from schemas.records import Ended, InvocationPhase, Timer
from schemas.settings import Settings
from tests.unit.runtime.conftest import PARTITIONS, invocation_on, make_processor, record, running_task
from tests.unit.runtime.fakes import FakeProducer
from tests.unit.state_machine.conftest import attempt, invoke, output

# Held for the attempts' outcomes; what is awaited commits at once (no linger).
HOLD = Settings(
    topic_prefix="t", partitions=PARTITIONS, processor_commit_hold_ms=60_000, processor_commit_linger_ms=0
)
LINGER = Settings(
    topic_prefix="t",
    partitions=PARTITIONS,
    processor_commit_hold_ms=60_000,
    processor_commit_linger_ms=30_000,
)


@pytest.fixture
def held(tmp_path: Path) -> ProcessorService:
    return make_processor(tmp_path, HOLD)


def _producer(processor: ProcessorService) -> FakeProducer:
    return processor.producer  # type: ignore[return-value]


def _status(processor: ProcessorService, p: int, inv: str) -> InvocationPhase | None:
    store = processor.tasks.tasks[p].store
    assert store is not None
    status = store.status(inv)
    return None if status is None else status.phase


def test_an_attempts_outcome_commits_with_the_invocation_that_started_it(held: ProcessorService) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.process([record(0, 10, invoke(inv=a))])
    producer = _producer(held)
    assert producer.calls == ["begin_transaction"]  # held: the attempt runs, nothing committed
    assert held.invoker.invoked == [(0, a, 1)]  # type: ignore[attr-defined]
    assert held.tasks.tasks[0].committed_offset == 10 and producer.produced == []
    held.process([record(0, 11, attempt(2000, 1, [output(b'"hi"')], Ended(), inv=a))])
    assert producer.calls == ["begin_transaction", "send_offsets_to_transaction", "commit_transaction"]
    [offsets] = producer.offsets
    assert [(tp.partition, tp.offset) for tp in offsets] == [(0, 12)]
    assert [r.topic for r in producer.produced].count("t.results") == 1  # the answer, committed
    assert _status(held, 0, a) == InvocationPhase.COMPLETED
    assert held.tasks.tasks[0].committed_offset == 12
    assert held.tasks.tasks[0].store.kv.checkpoint(0) is not None  # type: ignore[union-attr]


def test_what_someone_waits_for_commits_at_once(held: ProcessorService) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.process([record(0, 10, invoke(inv=a)), record(0, 11, b"not a command")])
    producer = _producer(held)
    assert producer.calls == ["begin_transaction", "send_offsets_to_transaction", "commit_transaction"]
    assert [r.topic for r in producer.produced].count("t.commands.dlq") == 1
    assert held.tasks.tasks[0].committed_offset == 12


def test_a_held_transaction_commits_once_its_hold_is_over(held: ProcessorService) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.process([record(0, 10, invoke(inv=a))])
    assert 0 < held._poll_timeout_s() <= 60  # the loop wakes up for it
    held._commit_if_due()
    assert "commit_transaction" not in _producer(held).calls
    assert held._open is not None
    held._open.began -= 61
    assert held._poll_timeout_s() == 0
    held._commit_if_due()
    assert _producer(held).calls[-1] == "commit_transaction" and held._open is None
    assert held.tasks.tasks[0].committed_offset == 11 and _status(held, 0, a) == InvocationPhase.INVOKED


def test_a_failed_commit_rolls_back_everything_held(held: ProcessorService) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.process([record(0, 10, invoke(inv=a))])
    producer = _producer(held)
    producer.fail["commit_transaction"] = KafkaError(KafkaError._TIMED_OUT, "slow", txn_requires_abort=True)
    held.process([record(0, 11, attempt(2000, 1, [output(b'"hi"')], Ended(), inv=a))])
    assert "abort_transaction" in producer.calls and producer.produced == []
    assert _status(held, 0, a) is None  # both batches rolled back
    assert held.consumer.seeks == [(0, 10)]  # type: ignore[union-attr]  # read again from the last commit
    assert held._open is None


def test_revoking_a_partition_aborts_what_is_held_and_the_rest_is_read_again(held: ProcessorService) -> None:
    a, b = invocation_on(0), invocation_on(1)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.tasks.tasks[1] = running_task(1, start_offset=20)
    held.process([record(0, 10, invoke(inv=a)), record(1, 20, invoke(inv=b))])
    assert "commit_transaction" not in _producer(held).calls
    held._on_revoke(held.consumer, [TopicPartition("t.commands", 1)])  # type: ignore[arg-type]
    assert _producer(held).calls[-1] == "abort_transaction" and held._open is None
    assert 1 not in held.tasks.tasks  # the next owner applies partition 1's records
    assert _status(held, 0, a) is None
    assert held.consumer.seeks == [(0, 10)]  # type: ignore[union-attr]


def test_a_revocation_of_partitions_not_held_leaves_the_transaction_open(held: ProcessorService) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.tasks.tasks[1] = running_task(1, start_offset=20)
    held.process([record(0, 10, invoke(inv=a))])
    held._on_revoke(held.consumer, [TopicPartition("t.commands", 1)])  # type: ignore[arg-type]
    assert "abort_transaction" not in _producer(held).calls and held._open is not None
    assert _status(held, 0, a) == InvocationPhase.INVOKED


def test_lost_partitions_roll_back_what_is_held_and_the_producer_is_replaced(held: ProcessorService) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.process([record(0, 10, invoke(inv=a))])
    held._on_lost(held.consumer, [TopicPartition("t.commands", 0)])  # type: ignore[arg-type]
    # No abort through a producer out of the group: its replacement aborts what it left open.
    assert "abort_transaction" not in _producer(held).calls
    assert held._open is None and held.txn is not None and held.txn.outage
    assert 0 not in held.tasks.tasks


def test_a_partition_held_for_the_registry_resumes_after_what_the_transaction_holds(
    held: ProcessorService,
) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.process([record(0, 10, invoke(inv=a))])
    held._held[0] = 0.0  # due now
    held._release_held()
    assert held.consumer.seeks == [(0, 11)]  # type: ignore[union-attr]  # not 10: applied, uncommitted


def test_right_after_a_commit_the_offsets_go_first_and_again_only_if_more_was_applied(
    held: ProcessorService,
) -> None:
    """librdkafka waits 20 ms to retry a produce's AddPartitionsToTxn that the coordinator answers
    CONCURRENT_TRANSACTIONS (still writing the last commit's markers), but only retry.backoff.ms
    for the offsets' AddOffsetsToTxn: a transaction begun right after a commit sends them first."""
    a, b = invocation_on(0, 0), invocation_on(0, 1)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    producer = _producer(held)
    real_produce = producer.produce

    def produce(*args: Any, **kwargs: Any) -> None:
        producer.calls.append("produce")
        real_produce(*args, **kwargs)

    producer.produce = produce  # type: ignore[method-assign]
    held.process([record(0, 10, invoke(inv=a)), record(0, 11, b"not a command")])  # commits at once
    producer.calls.clear()
    held.process([record(0, 12, invoke(inv=b))])  # begun right after that commit
    # Held: the attempt runs; its changelog writes wait for the commit.
    assert producer.calls == ["begin_transaction", "send_offsets_to_transaction"]
    producer.calls.clear()
    held.process([record(0, 13, attempt(2000, 1, [output(b'"hi"')], Ended(), inv=b))])
    assert producer.calls[-2:] == ["send_offsets_to_transaction", "commit_transaction"]  # 14, not 13
    assert [(tp.partition, tp.offset) for tp in producer.offsets[-1]] == [(0, 14)]
    producer.calls.clear()
    held.process([record(0, 14, b"not a command")])  # right after: first, and not again
    assert producer.calls == [
        "begin_transaction",
        "send_offsets_to_transaction",
        "produce",
        "commit_transaction",
    ]
    held._committed_at -= 1
    producer.calls.clear()
    held.process([record(0, 15, b"not a command")])  # long after a commit: at commit, as usual
    assert producer.calls == [
        "begin_transaction",
        "produce",
        "send_offsets_to_transaction",
        "commit_transaction",
    ]
    assert [(tp.partition, tp.offset) for tp in producer.offsets[-1]] == [(0, 16)]


def test_an_answer_lingers_while_attempts_it_started_run(tmp_path: Path) -> None:
    """A busy object: the answer of one invocation and the attempt of the next in one batch; the
    next one's outcome shares the commit (then nothing runs: its answer commits at once)."""
    processor = make_processor(tmp_path, LINGER)
    now = int(time.time() * 1000)  # the answers' retention timers are then a day away
    a, b = invocation_on(0, 0), invocation_on(0, 1)
    processor.tasks.tasks[0] = running_task(0, start_offset=10)
    processor.process([record(0, 10, invoke(inv=a))])
    processor.process(
        [record(0, 11, attempt(now, 1, [output(b'"a"')], Ended(), inv=a)), record(0, 12, invoke(inv=b))]
    )
    producer = _producer(processor)
    assert "commit_transaction" not in producer.calls  # a's answer waits for b's outcome
    assert processor._open is not None and processor._open.running == {(b, 1)}
    processor.process([record(0, 13, attempt(now, 1, [output(b'"b"')], Ended(), inv=b))])
    assert producer.calls.count("commit_transaction") == 1 and processor._open is None
    assert [r.topic for r in producer.produced].count("t.results") == 2
    assert _status(processor, 0, a) == _status(processor, 0, b) == InvocationPhase.COMPLETED


def _applied(
    actions: list[Action] | None = None,
    *,
    awaited: bool = False,
    commands: bool = False,
    ended: list[tuple[str, int]] | None = None,
) -> Applied:
    return Applied(actions or [], False, awaited, commands, ended or [])


def _open_with(*applied: Applied) -> OpenTransaction:
    txn = OpenTransaction(began=0.0)
    for a in applied:
        txn.add(running_task(0), 1, 1, a)
    return txn


START = InvokeAttempt(invocation_id="inv_a", attempt=1)
SOON = ScheduleTimer(Timer(invocation_id="inv_a", completion_id=1, wake_up_at_ms=1_000 + 50))
LATER = ScheduleTimer(Timer(invocation_id="inv_a", completion_id=1, wake_up_at_ms=1_000 + 86_400_000))


@pytest.mark.parametrize(
    ("applied", "expected"),
    [
        ([_applied()], 0.0),  # nothing to wait for
        ([_applied([START])], 5.0),  # its attempt's outcome: the hold
        ([_applied([START], awaited=True)], 0.01),  # an answer, and an attempt it started runs: linger
        ([_applied([START]), _applied(awaited=True, ended=[("inv_a", 1)])], 0.0),  # answered, none runs
        ([_applied([START], awaited=True, commands=True)], 0.0),  # commands: others read behind them
        ([_applied([START, SOON])], 0.0),  # a timer due within the hold is set only once committed
        ([_applied([START, LATER])], 5.0),  # a retention timer a day away does not hurry it
    ],
)
def test_how_long_a_transaction_may_stay_open(applied: list[Applied], expected: float) -> None:
    assert _open_with(*applied).hold_s(5.0, 0.01, now_ms=1_000) == expected


def test_a_clean_stop_commits_what_is_held(held: ProcessorService) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.process([record(0, 10, invoke(inv=a))])
    held._commit_held()
    assert _producer(held).calls[-1] == "commit_transaction" and held._open is None
    assert held.tasks.tasks[0].committed_offset == 11


@pytest.mark.parametrize("call", ["begin_transaction", "send_offsets_to_transaction"])
def test_a_batch_whose_transaction_fails_before_it_is_applied_is_read_again(
    held: ProcessorService, call: str
) -> None:
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=12)
    held._committed_at = time.perf_counter()  # right after a commit: the offsets go first
    _producer(held).fail[call] = KafkaError(KafkaError._TIMED_OUT, "slow", txn_requires_abort=True)
    held.process([record(0, 12, invoke(inv=a))])
    assert held.consumer.seeks == [(0, 12)]  # type: ignore[union-attr]  # not skipped
    assert held._open is None and _status(held, 0, a) is None


def test_the_changelog_gets_the_last_write_of_each_key_at_commit(held: ProcessorService) -> None:
    """A compacted changelog keeps only the last value of a key, and read_committed readers never
    see the ones before it in a transaction: only the last is produced."""
    a = invocation_on(0)
    held.tasks.tasks[0] = running_task(0, start_offset=10)
    held.process([record(0, 10, invoke(inv=a))])
    assert _producer(held).produced == [] and _producer(held)._pending == []  # nothing yet
    held.process([record(0, 11, attempt(2000, 1, [output(b'"hi"')], Ended(), inv=a))])
    changelog = [r.key for r in _producer(held).produced if r.topic == "t.changelog"]
    assert len(changelog) == len(set(changelog))  # one record per key
    assert f"status/{a}".encode() in changelog
    store = held.tasks.tasks[0].store
    assert store is not None and store.kv.checkpoint(0) is not None  # from the last record's delivery
