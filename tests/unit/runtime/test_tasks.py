"""Task lifecycle, the task manager's rebalance callbacks, local stores and timers."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from kafka_core.changelog_store import ChangelogStore, Checkpoint
from processor.apply import apply_records
from processor.service import ProcessorService
from processor.state_dir import StateDirectory
from processor.storage import PartitionStore
from processor.task import PartitionTask, TaskState
from processor.task_manager import TaskManager
from processor.timers import BATCH, TimerQueue
from schemas.records import Timer
from tests.unit.runtime.conftest import SETTINGS, invocation_on, record, running_task
from tests.unit.runtime.fakes import FakeConsumer, FakeProducer
from tests.unit.state_machine.conftest import invoke


def test_task_states_move_one_way() -> None:
    task = PartitionTask(0, SETTINGS, None)
    assert task.state == TaskState.CREATED
    with pytest.raises(RuntimeError):
        task.mark_running()  # not restored yet
    task.state = TaskState.RESTORING
    task.mark_running()
    assert task.state == TaskState.RUNNING
    task.close()
    assert task.state == TaskState.CLOSED and task.closing
    with pytest.raises(RuntimeError):
        task.restore()


def test_assignment_pauses_and_queues_revocation_closes() -> None:
    closed: list[int] = []
    manager = TaskManager(SETTINGS, None, on_closed=lambda t: closed.append(t.partition))
    consumer = FakeConsumer()
    tps = [TopicPartition("t.commands", p) for p in (0, 1)]
    manager.on_assign(consumer, tps)  # type: ignore[arg-type]
    assert consumer.assigned == [0, 1] and consumer.paused == {0, 1}  # nothing read before restore
    assert {t.state for t in manager.tasks.values()} == {TaskState.CREATED}
    assert manager.restoring()
    first = manager.tasks[0]
    first.state = TaskState.RESTORING
    manager._restored.put((first, True))
    manager.on_revoke(consumer, [tps[0]])  # type: ignore[arg-type]
    assert closed == [0] and 0 not in manager.tasks and first.closing
    assert manager.take_restored() == []  # restored after it was taken away: never resumed
    assert first.state == TaskState.CLOSED
    manager.on_lost(consumer, [tps[1]])  # type: ignore[arg-type]
    assert closed == [0, 1] and manager.tasks == {}


def test_a_failed_restore_is_retried_while_the_partition_is_owned() -> None:
    manager = TaskManager(SETTINGS, None, on_closed=lambda t: None)
    manager.on_assign(FakeConsumer(), [TopicPartition("t.commands", 3)])  # type: ignore[arg-type]
    failed = manager.tasks[3]
    failed.poison[7] = "bad"
    manager._to_restore.get_nowait()
    manager._restored.put((failed, False))
    assert manager.take_restored() == []
    retry = manager.tasks[3]
    assert retry is not failed and retry.state == TaskState.CREATED and retry.poison == {7: "bad"}
    assert manager._to_restore.get_nowait() is retry


def test_after_a_producer_replacement_every_task_restores_again() -> None:
    closed: list[int] = []
    manager = TaskManager(SETTINGS, None, on_closed=lambda t: closed.append(t.partition))
    consumer = FakeConsumer()
    manager.on_assign(consumer, [TopicPartition("t.commands", p) for p in (0, 1)])  # type: ignore[arg-type]
    while not manager._to_restore.empty():
        manager._to_restore.get_nowait()
    old = {0: running_task(0), 1: manager.tasks[1]}
    old[1].state = TaskState.RESTORING
    old[0].poison[3] = "bad"
    manager.tasks[0] = old[0]
    consumer.paused.clear()
    manager.restart_all(consumer, "replaced")  # type: ignore[arg-type]
    assert consumer.paused == {0, 1} and consumer.assigned == [0, 1]  # kept, not re-assigned
    assert sorted(closed) == [0, 1]  # their attempts cancelled
    assert old[0].state == TaskState.CLOSED and old[1].closing  # the restorer closes the other
    fresh = [manager._to_restore.get_nowait() for _ in range(2)]
    assert fresh == [manager.tasks[0], manager.tasks[1]]
    assert all(t.state == TaskState.CREATED for t in fresh) and fresh[0].poison == {3: "bad"}


def test_store_commits_only_with_kafka_and_keeps_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "p0.sqlite"
    task = running_task(0)
    task.store = PartitionStore(0, ChangelogStore(path))
    inv = invocation_on(0)
    producer = FakeProducer()
    producer.begin_transaction()
    apply_records(task, [record(0, 0, invoke(inv=inv))], producer)
    task.rollback_store()  # Kafka aborted
    assert task.store.status(inv) is None and task.store.kv.checkpoint(0) is None
    producer.begin_transaction()
    apply_records(task, [record(0, 0, invoke(inv=inv))], producer)
    producer.commit_transaction()
    task.committed_offset = 1
    task.commit_store()
    written = len([r for r in producer.produced if r.topic == "t.changelog"])
    assert task.changelog_next == written
    task.store.kv.close()
    reopened = PartitionStore(0, ChangelogStore(path))  # a restart: the copy and its checkpoint
    assert reopened.status(inv) is not None and reopened.invoked() == [inv]
    assert reopened.kv.checkpoint(0).offset == written  # type: ignore[union-attr]
    assert reopened.kv.checkpoint(0).input_offset == 1  # type: ignore[union-attr]  # the commands read


def test_a_checkpoint_is_trusted_only_for_the_same_topic_recent_and_in_range(tmp_path: Path) -> None:
    kv = ChangelogStore(tmp_path / "s.sqlite")
    kv.commit({0: 50}, topic_id="t.changelog/4", now_ms=1_000)
    day = 24 * 3600 * 1000

    def resume(**kw: int | str) -> int | None:
        args: dict = {"low": 0, "high": 80, "topic_id": "t.changelog/4", "max_age_ms": day, "now_ms": 2_000}
        return kv.resume_offset(0, **{**args, **kw})

    assert resume() == 50
    assert resume(topic_id="t.changelog/8") is None  # recreated with another partition count
    assert resume(high=40) is None  # the topic is shorter than what we saw: a new topic
    assert resume(low=60) is None  # records we never read were deleted
    assert resume(now_ms=1_000 + day) is None  # tombstones we never saw may be gone
    assert kv.resume_offset(1, low=0, high=1, topic_id="t.changelog/4", max_age_ms=day, now_ms=2_000) is None


def test_a_checkpoint_ahead_of_the_committed_input_offset_is_not_trusted(tmp_path: Path) -> None:
    """Kafka lost a transaction whose commit it had confirmed (a broker restarted right after):
    the store committed with it is ahead of the group's committed offset, and is rebuilt."""
    kv = ChangelogStore(tmp_path / "s.sqlite")
    kv.commit({0: 50}, topic_id="t.changelog/4", now_ms=1_000, input_offsets={0: 45})
    day = 24 * 3600 * 1000

    def resume(committed_input: int | None) -> int | None:
        return kv.resume_offset(
            0,
            low=0,
            high=80,
            topic_id="t.changelog/4",
            max_age_ms=day,
            now_ms=2_000,
            committed_input=committed_input,
        )

    assert resume(45) == 50
    assert resume(60) == 50  # behind Kafka is fine: the changelog's tail is restored
    assert resume(44) is None  # the transaction that took it to 45 never committed
    assert resume(None) == 50  # a store that follows no input (the admin's copy)
    kv.commit(input_offsets={0: 47})  # a batch that wrote no changelog records
    assert kv.checkpoint(0) is not None and kv.checkpoint(0).offset == 50  # type: ignore[union-attr]
    assert resume(46) is None


def test_a_store_of_an_older_layout_is_rebuilt(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE checkpoints (partition INTEGER PRIMARY KEY, offset INTEGER NOT NULL,
            written_at_ms INTEGER NOT NULL, topic_id TEXT NOT NULL);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO kv VALUES ('a', x'01');
        INSERT INTO checkpoints VALUES (0, 50, 1000, 't.changelog/4');
        INSERT INTO meta VALUES ('schema', '1');
        """
    )
    db.commit()
    db.close()
    kv = ChangelogStore(path)
    assert kv.checkpoint(0) is None and kv.get("a") is None  # restored from the changelog instead
    kv.commit({0: 5}, topic_id="t.changelog/4", now_ms=1, input_offsets={0: 2})
    assert kv.checkpoint(0) == Checkpoint(5, 1, "t.changelog/4", 2)


def test_timers_load_in_batches_and_fire_in_order() -> None:
    store = PartitionStore(0)
    inv = invocation_on(0)
    for i in range(BATCH + 10):
        store.put(
            f"timer/{1000 + i:016d}/{inv}/{i}",
            Timer(invocation_id=inv, completion_id=i, wake_up_at_ms=1000 + i).encode(),
        )
    store.kv.commit()
    queue = TimerQueue()
    queue.load(store)
    assert len(queue.heap) == BATCH and not queue.exhausted  # the rest stays on disk
    queue.schedule(Timer(invocation_id=inv, completion_id=9999, wake_up_at_ms=5))  # earlier: kept
    queue.schedule(Timer(invocation_id=inv, completion_id=9998, wake_up_at_ms=10**9))  # beyond: loaded later
    fired = queue.due(1000 + BATCH + 20, store)
    assert [f.completion_id for f in fired] == [9999, *range(BATCH + 10)]
    assert queue.next_due_ms() is None and queue.exhausted


def test_slots_keep_their_process_id_and_are_exclusive(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path)
    first = state.claim_slot()
    second = state.claim_slot()
    assert (first.number, second.number) == (0, 1) and first.process_id != second.process_id
    pid = first.process_id
    first.lock.release()  # the first processor stops (or crashes)
    again = state.claim_slot()
    assert again.number == 0 and again.process_id == pid  # same transactional id after a restart
    assert state.lock_store(2) is not None and state.lock_store(3) is not None


def test_a_task_the_consumer_refuses_to_resume_is_restored_again(processor: ProcessorService) -> None:
    """librdkafka can refuse the seek ("Erroneous state") while a partition is being moved: the
    processor must not crash; the task is restored again while the partition is ours."""
    from confluent_kafka import KafkaError, KafkaException

    task = running_task(0, start_offset=4)
    task.state = TaskState.RESTORING
    processor.tasks.tasks[0] = task

    def refuse(_tp: TopicPartition) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE, "Erroneous state"))

    processor.consumer.seek = refuse  # type: ignore[union-attr,method-assign]
    processor._resume(task)
    assert task.state == TaskState.CLOSED and processor.invoker.cancelled == [0]  # type: ignore[attr-defined]
    again = processor.tasks.tasks[0]
    assert again is not task and again.state == TaskState.CREATED
    assert processor.tasks._to_restore.get_nowait() is again
