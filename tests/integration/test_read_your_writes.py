"""Read-your-writes across processes: a call made right after `POST /deployments` answered 201 is
never 404, although the admin (which wrote the registry records) and the ingress (which answers
the call from its own view of the metadata topic) are separate processes.

Each round removes the deployment (`DELETE ?force=true`), waits until the ingress has dropped
its services, registers it again and calls it at once: the ingress may not have read the new
records yet, and must catch up with the topic before it answers "not found"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kafka_core.kafka import create_topics
from tests.support.cluster import Stack

pytestmark = pytest.mark.integration

ROUNDS = 40
SERVICES_APP = "examples.python.services:app"


@pytest.fixture
def stack(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Stack]:
    """admin, ingress and one processor as separate processes, the example SDK services."""
    stack = Stack(
        kafka_bootstrap, topic_prefix, tmp_path, partitions=2, processors={"p1": "state"}, app=SERVICES_APP
    )
    try:
        create_topics(stack.settings)
        stack.deployment.start()
        stack.admin.start(90)
        stack.ingress.start(90)
        stack.start_processor("p1", 90)
        yield stack
    finally:
        stack.stop()


def ingress_services(client: httpx.Client, stack: Stack) -> list[str]:
    health = client.get(f"{stack.ingress_url}/restate/health")
    assert health.status_code == 200, health.text
    return list(health.json()["services"])


def test_a_call_right_after_registration_is_never_404(stack: Stack) -> None:
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=30) as client:
        deployment_id: str | None = None
        for round_ in range(ROUNDS):
            if deployment_id is not None:
                gone = client.delete(f"{stack.admin_url}/deployments/{deployment_id}?force=true")
                assert gone.status_code == 202, gone.text
                # The ingress has applied the removal: the next registration is news to it.
                stack.wait_until(
                    lambda: "Greeter" not in ingress_services(client, stack), 10, "the ingress to forget"
                )
            reg = client.post(f"{stack.admin_url}/deployments", json={"uri": stack.deployment.uri})
            assert reg.status_code == 201, reg.text
            deployment_id = reg.json()["id"]
            call = client.post(
                f"{stack.ingress_url}/Greeter/greet", json=f"round {round_}", headers={"x-round": str(round_)}
            )
            statuses[call.status_code] = statuses.get(call.status_code, 0) + 1
            assert call.status_code != 404, f"round {round_}: 404 right after the 201: {call.text}"
            assert call.status_code == 200, f"round {round_}: {call.status_code} {call.text}"
            assert call.json() == f"Hello round {round_}"
    assert statuses == {200: ROUNDS}


def test_an_unknown_service_is_still_404_and_answered_quickly(stack: Stack) -> None:
    with httpx.Client(timeout=30) as client:
        started = time.monotonic()
        for _ in range(20):
            r = client.post(f"{stack.ingress_url}/NoSuchService/greet", json="x")
            assert r.status_code == 404, r.text
        per_request = (time.monotonic() - started) / 20
    # Catching up is one end-offset request to Kafka, not a wait for a timeout.
    assert per_request < 0.5, f"a 404 took {per_request:.3f}s on average"
    stack.check_alive()


def test_a_query_right_after_a_call_or_an_idempotent_send_sees_it(stack: Stack) -> None:
    """The admin answers SQL from its own copy of the changelog, another process than the one
    that answered the call: it catches up with what is committed before it runs a query, so the
    invocation a client just had an answer for is there, as on Restate (whose queries read the
    partition stores that answered). A send with an idempotency key is answered once the
    processor has taken it (as Restate's waits for the submit notification); a plain send's 202
    only says it was appended, on Restate as here."""
    stack.register()
    with httpx.Client(timeout=30) as client:
        for round_ in range(ROUNDS // 2):
            call = client.post(f"{stack.ingress_url}/Greeter/greet", json=f"round {round_}")
            assert call.status_code == 200, call.text
            called = call.headers["x-restate-id"]
            sent = client.post(
                f"{stack.ingress_url}/Greeter/greet/send",
                json=f"sent {round_}",
                headers={"idempotency-key": f"{stack.prefix}-{round_}"},
            )
            assert sent.status_code == 202, sent.text
            queued = sent.json()["invocationId"]
            sql = f"SELECT id, status FROM sys_invocation WHERE id IN ('{called}', '{queued}')"
            r = client.post(
                f"{stack.admin_url}/query", json={"query": sql}, headers={"accept": "application/json"}
            )
            assert r.status_code == 200, r.text
            rows = {row["id"]: row["status"] for row in r.json()["rows"]}
            assert rows.get(called) == "completed", f"round {round_}: {rows}"
            assert queued in rows, f"round {round_}: the send is not in sys_invocation: {rows}"
            described = client.get(f"{stack.admin_url}/invocations/{called}")
            assert described.status_code == 200, described.text
