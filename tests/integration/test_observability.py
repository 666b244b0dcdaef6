"""Metrics and health on a real stack: admin, ingress and one processor as OS processes on the
real broker, the example services served by the Restate Python SDK. After a call, each
component's `/metrics` has the series an operator would chart, with values that follow from the
call; the health endpoints report Kafka reachable and the registry view current; the processor's
`/tasks` lists its partitions, every one RUNNING."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Stack, running_stack

pytestmark = pytest.mark.integration

PARTITIONS = 2
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def stack(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(
        kafka_bootstrap,
        topic_prefix,
        tmp_path,
        partitions=PARTITIONS,
        processors={"p1": "state"},
        app="examples.python.services:app",
    )
    with running_stack(stack):
        yield stack


def scrape(client: httpx.Client, url: str) -> Samples:
    r = client.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def processor_url(stack: Stack) -> str:
    """Port 0 by default: the processor logs the one the OS chose."""
    listening = [e for e in stack.events("p1") if e.get("event") == "processor.http_listening"]
    assert listening, "the processor did not log processor.http_listening"
    assert listening[-1]["host"] == "127.0.0.1"
    return f"http://127.0.0.1:{listening[-1]['port']}"


def test_metrics_and_health_after_a_call(stack: Stack) -> None:
    with httpx.Client(timeout=30) as client:
        call = client.post(f"{stack.ingress_url}/Greeter/greet", json="metrics")
        assert call.status_code == 200 and call.json() == "Hello metrics", call.text
        proc = processor_url(stack)

        target = {"service": "Greeter", "handler": "greet"}

        # The processor counts a committed transition once its commit returns, which may be just
        # after the ingress had the result: waited for, with a bound.
        def completed() -> Samples | None:
            samples = scrape(client, proc)
            done = value(samples, "kinvoke_invocation_transitions_total", phase="completed", **target)
            now = value(samples, "kinvoke_invocations", state="completed", **target)
            return samples if done is not None and done >= 1 and now is not None else None

        samples = stack.wait_until(completed, 30, "the processor to count the completed invocation")
        assert (value(samples, "kinvoke_invocation_transitions_total", phase="invoked", **target) or 0) >= 1
        # The invocations now, by status: the call is completed, nothing runs or backs off.
        assert value(samples, "kinvoke_invocations", state="completed", **target) == 1
        assert value(samples, "kinvoke_invocations", state="running", **target) == 0
        assert value(samples, "kinvoke_invocations", state="backing-off", **target) == 0
        assert (value(samples, "kinvoke_attempts_started_total", **target) or 0) >= 1
        assert (value(samples, "kinvoke_attempts_completed_total", outcome="ended", **target) or 0) >= 1
        attempts = value(
            samples, "kinvoke_attempt_duration_seconds_count", service="Greeter", outcome="ended"
        )
        assert attempts is not None and attempts >= 1
        assert (
            value(samples, "kinvoke_attempt_duration_seconds_sum", service="Greeter", outcome="ended") or 0
        ) > 0
        commits = value(samples, "kinvoke_transaction_commit_duration_seconds_count")
        assert commits is not None and commits > 0
        assert (value(samples, "kinvoke_transaction_commit_duration_seconds_sum") or 0) > 0
        # At least the Invoke and the attempt's outcome were applied, in at most `commits` batches.
        records = value(samples, "kinvoke_transaction_records_sum") or 0
        assert records >= 2 and records >= commits
        for p in range(PARTITIONS):
            restore = value(samples, "kinvoke_task_restore_seconds", partition=str(p))
            assert restore is not None and restore >= 0, f"no restore time for partition {p}"

        # Lag: every partition's series exists, and it reaches 0 once the processor has read all.
        def lags() -> list[float | None]:
            s = scrape(client, proc)
            return [value(s, "kinvoke_consumer_lag", partition=str(p)) for p in range(PARTITIONS)]

        stack.wait_until(
            lambda: all(lag == 0 for lag in lags()),
            30,
            lambda: f"the consumer lag of every partition to be 0 (it is {lags()})",
        )
        assert value(scrape(client, proc), "kinvoke_tasks", state="running") == PARTITIONS

        tasks = client.get(f"{proc}/tasks")
        assert tasks.status_code == 200, tasks.text
        report = tasks.json()
        assert report["partitions"] == list(range(PARTITIONS))
        assert [(t["partition"], t["state"]) for t in report["tasks"]] == [
            (p, "RUNNING") for p in range(PARTITIONS)
        ]
        health = client.get(f"{proc}/health")
        assert health.status_code == 200 and health.json()["healthy"] is True, health.text

        ingress = scrape(client, stack.ingress_url)
        calls = value(ingress, "kinvoke_ingress_request_duration_seconds_count", kind="call", status="200")
        assert calls is not None and calls >= 1
        assert (
            value(ingress, "kinvoke_ingress_request_duration_seconds_sum", kind="call", status="200") or 0
        ) > 0

        admin = scrape(client, stack.admin_url)
        registered = value(
            admin,
            "kinvoke_admin_request_duration_seconds_count",
            method="POST",
            route="/deployments",
            status="201",
        )
        assert registered is not None and registered >= 1
        assert (value(admin, "process_resident_memory_bytes") or 0) > 0

        ingress_health = client.get(f"{stack.ingress_url}/restate/health")
        assert ingress_health.status_code == 200, ingress_health.text
        body = ingress_health.json()
        assert "Greeter" in body["services"]
        assert body["kafka"] == {"reachable": True, "problem": None}
        assert body["registry"] == {"current": True, "problem": None}

        admin_health = client.get(f"{stack.admin_url}/health")
        assert admin_health.status_code == 200 and admin_health.content == b""  # Restate's shape
        details = client.get(f"{stack.admin_url}/health/details")
        assert details.status_code == 200, details.text
        assert details.json() == {
            "healthy": True,
            "kafka": {"reachable": True, "problem": None},
            "registry": {"current": True, "problem": None},
        }
