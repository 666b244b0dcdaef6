"""The processor's metrics wiring: what is counted after a commit (and not after an abort), the
invoker's attempt outcomes, and the processor's HTTP server (/metrics, /tasks, /health)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from processor import metrics
from processor.http_server import HttpPortTaken, ProcessorHttp
from processor.invoker.attempt import AttemptRequest
from processor.invoker.service import InvokerService
from processor.service import ProcessorService
from processor.state_machine import InvokeAttempt
from processor.task import TaskState
from schemas.registry import Registry
from tests.unit.runtime.conftest import invocation_on, record, running_task
from tests.unit.runtime.fakes import FakeEffects, FakeProducer
from tests.unit.state_machine.conftest import invoke


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def invoked() -> float:
    return sample("kinvoke_invocation_transitions_total", phase="invoked", service="Greeter", handler="greet")


def tracked(processor: ProcessorService, partition: int, start_offset: int) -> None:
    task = running_task(partition, start_offset)
    assert task.store is not None
    task.store.track_transitions = True  # as a restored task's store does
    processor.tasks.tasks[partition] = task


def test_a_committed_batch_counts_its_transitions_latency_and_size(processor: ProcessorService) -> None:
    tracked(processor, 0, 10)
    tracked(processor, 1, 20)
    before = (invoked(), sample("kinvoke_transaction_commit_duration_seconds_count"))
    records_before = sample("kinvoke_transaction_records_sum")
    a, b = invocation_on(0), invocation_on(1)
    processor.process([record(0, 10, invoke(inv=a)), record(1, 20, invoke(inv=b))])
    assert invoked() - before[0] == 2
    assert sample("kinvoke_transaction_commit_duration_seconds_count") - before[1] == 1
    assert sample("kinvoke_transaction_records_sum") - records_before == 2
    # The same invocation written again without a phase change is not counted again.
    processor.process([record(0, 11, invoke(inv=a))])
    assert invoked() - before[0] == 2


def test_an_aborted_batch_counts_nothing_and_its_retry_counts_once(processor: ProcessorService) -> None:
    tracked(processor, 0, 10)
    producer: FakeProducer = processor.producer  # type: ignore[assignment]
    producer.fail["send_offsets_to_transaction"] = KafkaError(
        KafkaError._TIMED_OUT, "slow", txn_requires_abort=True
    )
    before_invoked = invoked()
    before_commits = sample("kinvoke_transaction_commit_duration_seconds_count")
    batch = [record(0, 10, invoke(inv=invocation_on(0)))]
    processor.process(batch)
    assert invoked() == before_invoked
    assert sample("kinvoke_transaction_commit_duration_seconds_count") == before_commits
    producer.fail.clear()
    processor.process(batch)
    assert invoked() - before_invoked == 1


def test_the_task_report_names_each_owned_partition_and_its_state(processor: ProcessorService) -> None:
    processor.tasks.tasks[0] = running_task(0, start_offset=7)
    processor.tasks.tasks[3] = running_task(3)
    processor.tasks.tasks[3].state = TaskState.RESTORING
    report = processor.task_report()
    assert report["partitions"] == [0, 3]
    assert [(t["partition"], t["state"], t["committed_offset"]) for t in report["tasks"]] == [
        (0, "RUNNING", 7),
        (3, "RESTORING", 0),
    ]


def test_an_attempt_is_counted_when_it_starts_and_when_it_ends() -> None:
    """No deployment is registered for the service: the attempt fails at once."""
    effects = FakeEffects()
    service = InvokerService(Registry, effects)  # type: ignore[arg-type]
    started = sample("kinvoke_attempts_started_total", service="Nowhere", handler="h")
    failed = sample("kinvoke_attempts_completed_total", service="Nowhere", handler="h", outcome="failed")
    timed = sample("kinvoke_attempt_duration_seconds_count", service="Nowhere", outcome="failed")
    inv = invocation_on(0)
    request = AttemptRequest(inv, b"", "Nowhere", "h", None, [], None)
    asyncio.run(service._attempt(0, InvokeAttempt(inv, 1), None, "Nowhere", request))
    assert len(effects.appended) == 1  # the outcome went to the log
    assert sample("kinvoke_attempts_started_total", service="Nowhere", handler="h") - started == 1
    assert (
        sample("kinvoke_attempts_completed_total", service="Nowhere", handler="h", outcome="failed") - failed
        == 1
    )
    assert sample("kinvoke_attempt_duration_seconds_count", service="Nowhere", outcome="failed") - timed == 1


# -- the HTTP server ------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[ProcessorHttp, dict[str, Any]]]:
    state: dict[str, Any] = {"problem": None}
    tasks = {"member": "m", "partitions": [2], "tasks": [{"partition": 2, "state": "RUNNING"}]}
    http = ProcessorHttp("127.0.0.1", 0, lambda: tasks, lambda: state["problem"]).start()
    try:
        yield http, state
    finally:
        http.stop()


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers["content-type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["content-type"], e.read()


def test_the_http_server_serves_metrics_tasks_and_health(
    server: tuple[ProcessorHttp, dict[str, Any]],
) -> None:
    http, state = server
    assert http.port > 0  # port 0: one the OS chose
    status, content_type, body = get(http.port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert b"# TYPE kinvoke_transaction_commit_duration_seconds histogram" in body
    status, _, body = get(http.port, "/tasks")
    assert status == 200 and json.loads(body)["tasks"] == [{"partition": 2, "state": "RUNNING"}]
    status, _, body = get(http.port, "/health")
    assert status == 200 and json.loads(body)["healthy"] is True
    state["problem"] = "processor consumer: Kafka is unreachable"
    status, _, body = get(http.port, "/health")
    assert status == 503
    health = json.loads(body)
    assert health["healthy"] is False and health["problem"] == state["problem"]
    assert health["partitions"] == [2]
    assert get(http.port, "/nope")[0] == 404


def test_a_taken_port_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(
            HttpPortTaken, match=f"cannot listen on 127.0.0.1:{port}.*KINVOKE_PROCESSOR_HTTP_PORT"
        ):
            ProcessorHttp("127.0.0.1", port, dict, lambda: None)


def test_lag_per_running_partition_and_tasks_by_state(processor: ProcessorService) -> None:
    processor.tasks.tasks[0] = running_task(0, start_offset=2)
    processor.tasks.tasks[1] = running_task(1, start_offset=3)  # nothing consumed yet: no position
    processor.tasks.tasks[2] = running_task(2)
    processor.tasks.tasks[2].state = TaskState.RESTORING
    consumer = processor.consumer
    consumer.positions[0] = 5  # type: ignore[union-attr]
    highs = {0: 9, 1: 3, 2: 50}
    consumer.get_watermark_offsets = lambda tp, cached: (0, highs[tp.partition])  # type: ignore[union-attr]
    processor._update_gauges()
    assert sample("kinvoke_consumer_lag", partition="0") == 4
    assert sample("kinvoke_consumer_lag", partition="1") == 0  # from the task's committed offset
    assert REGISTRY.get_sample_value("kinvoke_consumer_lag", {"partition": "2"}) is None  # not running
    assert sample("kinvoke_tasks", state="running") == 2 and sample("kinvoke_tasks", state="restoring") == 1
    processor._on_task_closed(processor.tasks.tasks.pop(0))  # given up: its series go
    assert REGISTRY.get_sample_value("kinvoke_consumer_lag", {"partition": "0"}) is None


def test_invocations_by_state_are_published_after_a_commit_and_dropped_with_the_task(
    processor: ProcessorService,
) -> None:
    def running() -> float | None:
        labels = {"state": "running", "service": "Greeter", "handler": "greet"}
        return REGISTRY.get_sample_value("kinvoke_invocations", labels)

    for p in range(4):  # what earlier tests' processors left in the process' registry
        metrics.INVOCATIONS_BY_STATE.drop(p)
    tracked(processor, 2, 10)
    tracked(processor, 3, 10)
    processor.process(
        [record(2, 10, invoke(inv=invocation_on(2))), record(3, 10, invoke(inv=invocation_on(3)))]
    )
    assert running() == 2
    processor.process([record(2, 11, invoke(inv=invocation_on(2, 1)))])
    assert running() == 3
    processor._on_task_closed(processor.tasks.tasks.pop(2))  # revoked: its two go
    assert running() == 1
    processor._on_task_closed(processor.tasks.tasks.pop(3))
    assert running() is None
