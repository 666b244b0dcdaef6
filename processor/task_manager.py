"""The TaskManager owns the processor's partition tasks (Kafka Streams' TaskManager).

Rebalance callbacks only do what must happen inside them: on assignment, take the partitions
and pause them, and queue their tasks for restoring; on revocation or loss, close the tasks and
cancel their attempts. Restoring happens in the restorer thread; the processor loop picks up
restored tasks, positions the partition at the stable committed offset and resumes it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog
from confluent_kafka import Consumer, TopicPartition

from kafka_core.supervision import SupervisedThread
from processor.state_dir import StateDirectory
from processor.task import PartitionTask, TaskClosed, TaskState
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


class TaskManager:
    def __init__(
        self,
        settings: Settings,
        state_dir: StateDirectory | None,
        on_closed: Callable[[PartitionTask], None],
    ) -> None:
        self.settings = settings
        self.topic = Topics(settings.topic_prefix).commands
        self.state_dir = state_dir
        self.tasks: dict[int, PartitionTask] = {}
        self._on_closed = on_closed
        self._to_restore: queue.Queue[PartitionTask] = queue.Queue()
        self._restored: queue.Queue[tuple[PartitionTask, bool]] = queue.Queue()  # (task, restored?)
        self._restorer = SupervisedThread("restorer", self._restore_loop)

    def start(self) -> TaskManager:
        self._restorer.start()
        return self

    def stop(self) -> None:
        for task in list(self.tasks.values()):
            self._close(task)
        self.tasks.clear()
        self._restorer.stop()

    def restorer_alive(self) -> bool:
        return self._restorer.is_alive()

    # -- rebalance callbacks (the processor loop's thread, inside poll) -------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        # Nothing is consumed from a partition before its state is restored.
        consumer.pause(partitions)
        for tp in partitions:
            old = self.tasks.pop(tp.partition, None)
            if old is not None:
                self._close(old)
            task = PartitionTask(tp.partition, self.settings, self.state_dir)
            self.tasks[tp.partition] = task
            self._to_restore.put(task)
        if partitions:
            log.info(
                "tasks.assigned",
                partitions=sorted(tp.partition for tp in partitions),
                owned=sorted(self.tasks),
            )

    def restart_all(self, consumer: Consumer, why: str) -> None:
        """Close every task and restore it again, the partitions kept: after the transactional
        producer was replaced, what this processor believes committed may not be (Kafka has
        lost a confirmed commit across a broker restart). Restoring re-reads the stable
        committed offset, and a store ahead of it is rebuilt (see kafka_core.changelog_store)."""
        if not self.tasks:
            return
        partitions = [TopicPartition(self.topic, p) for p in sorted(self.tasks)]
        consumer.pause(partitions)
        for tp in partitions:
            old = self.tasks.pop(tp.partition)
            self._close(old)
            task = PartitionTask(tp.partition, self.settings, self.state_dir)
            task.poison = old.poison
            self.tasks[tp.partition] = task
            self._to_restore.put(task)
        log.warning("tasks.restarting", why=why, partitions=sorted(self.tasks))

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(partitions, "revoked")

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(partitions, "lost")

    def _give_up(self, partitions: list[TopicPartition], why: str) -> None:
        for tp in partitions:
            task = self.tasks.pop(tp.partition, None)
            if task is not None:
                self._close(task)
        if partitions:
            log.info(
                f"tasks.{why}", partitions=sorted(tp.partition for tp in partitions), owned=sorted(self.tasks)
            )

    def _close(self, task: PartitionTask) -> None:
        """Close a task from the loop's thread; a task being restored is closed by the restorer."""
        self._on_closed(task)
        if task.state == TaskState.RESTORING:
            task.request_close()
        else:
            task.close()

    # -- restoring ------------------------------------------------------------------------------

    def _restore_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                task = self._to_restore.get(timeout=0.2)
            except queue.Empty:
                continue
            if task.state != TaskState.CREATED:
                continue  # closed before its turn
            try:
                task.restore()
            except TaskClosed:
                task.close()
                continue
            except Exception:
                log.exception("task.restore_failed", partition=task.partition)
                task.close()
                self._restored.put((task, False))
                stop.wait(1.0)
                continue
            if task.closing:
                task.close()
            else:
                self._restored.put((task, True))

    def take_restored(self) -> list[PartitionTask]:
        """Restored tasks that are still owned, for the loop to resume. A restore that failed
        (broker unreachable, say) is tried again with a fresh task while the partition is ours."""
        out: list[PartitionTask] = []
        while True:
            try:
                task, ok = self._restored.get_nowait()
            except queue.Empty:
                return out
            owned = self.tasks.get(task.partition) is task
            if ok and owned and task.state == TaskState.RESTORING:
                out.append(task)
                continue
            task.close()
            if owned and not ok:
                self._queue_again(task)

    def restore_again(self, task: PartitionTask, why: str) -> None:
        """A restored task could not be resumed (the consumer refused the seek): close it and,
        while the partition is ours, restore it again."""
        owned = self.tasks.get(task.partition) is task
        self._on_closed(task)
        task.close()  # restored, not restoring: this thread closes it
        if owned:
            log.warning("task.restoring_again", partition=task.partition, why=why)
            self._queue_again(task)

    def _queue_again(self, task: PartitionTask) -> None:
        retry = PartitionTask(task.partition, self.settings, self.state_dir)
        retry.poison = task.poison
        self.tasks[task.partition] = retry
        self._to_restore.put(retry)

    def running(self) -> dict[int, PartitionTask]:
        return {p: t for p, t in self.tasks.items() if t.state == TaskState.RUNNING}

    def restoring(self) -> bool:
        return any(t.state in (TaskState.CREATED, TaskState.RESTORING) for t in self.tasks.values())
