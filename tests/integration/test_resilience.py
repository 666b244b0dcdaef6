"""The ingress and the admin API through a broker restart: real broker (the session's, stopped and
started in the test), admin/ingress/processor as separate processes, a real Python SDK deployment.

While the broker is down `/health` answers 503 with the reason, and calls and registry writes fail
in Restate's error shapes within their bounds; once it is back both answer 200 again and calls
succeed, without restarting the ingress or the admin process.

(A subscription consumer that crashes is restarted: see tests/unit/test_subscription_resilience.py,
where the crash is injected through a fake client — a real broker cannot be made to crash one.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kafka_core.commands import DELIVERY_TIMEOUT_S
from kafka_core.kafka import create_topics
from kafka_core.metadata import READ_YOUR_WRITES_TIMEOUT_S, WRITE_DELIVERY_TIMEOUT_S
from kinvoke.broker import Broker
from schemas.settings import Settings
from tests.conftest import free_port
from tests.support.processes import Component
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration

PARTITIONS = 2
MARGIN_S = 10.0  # for a loaded machine, on top of each documented bound


@pytest.fixture
def cluster(kafka_broker: Broker, topic_prefix: str, tmp_path: Path) -> Iterator[dict[str, Component]]:
    admin_port, ingress_port = free_port(), free_port()
    env = {
        "KINVOKE_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "KINVOKE_TOPIC_PREFIX": topic_prefix,
        "KINVOKE_PARTITIONS": str(PARTITIONS),
        "KINVOKE_ADMIN_PORT": str(admin_port),
        "KINVOKE_INGRESS_PORT": str(ingress_port),
        "KINVOKE_STATE_DIR": str(tmp_path / "state"),
    }
    create_topics(
        Settings(bootstrap_servers=kafka_broker.bootstrap, topic_prefix=topic_prefix, partitions=PARTITIONS)
    )
    parts = {
        "admin": Component("admin", env, tmp_path, admin_port),
        "ingress": Component("ingress", env, tmp_path, ingress_port),
        "processor": Component("processor", env, tmp_path),
    }
    try:
        for c in parts.values():
            c.start(60)
        yield parts
    finally:
        for c in parts.values():
            c.stop()


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, logs: dict[str, Component]) -> None:
    """Poll `check` until it holds; fail with the components' logs after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError as e:  # a server that does not answer yet is polled again
            last = e
        time.sleep(0.2)
    tails = "\n".join(f"--- {name}:\n{c.log_text()[-4000:]}" for name, c in logs.items())
    pytest.fail(f"{what} not reached within {timeout_s}s (last error: {last})\n{tails}", pytrace=False)


def ingress_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and isinstance(body["message"], str), body
    assert response.headers["x-restate-error-source"] == "ingress"
    return str(body["message"])


def admin_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "restate_code"}, body
    return str(body["message"])


def call(client: httpx.Client, url: str, body: Any, timeout_s: float = 90) -> httpx.Response:
    return client.post(
        url, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=timeout_s
    )


def test_ingress_and_admin_answer_through_a_broker_restart(
    cluster: dict[str, Component], kafka_broker: Broker, tmp_path: Path
) -> None:
    admin = f"http://127.0.0.1:{cluster['admin'].port}"
    ingress = f"http://127.0.0.1:{cluster['ingress'].port}"
    with run_sdk_deployment(log=tmp_path / "sdk.log") as uri, httpx.Client() as client:
        reg = client.post(f"{admin}/deployments", json={"uri": uri}, timeout=60)
        assert reg.status_code == 201, reg.text
        wait_for(
            "the ingress knowing Greeter",
            lambda: "Greeter" in client.get(f"{ingress}/restate/health", timeout=5).json()["services"],
            30,
            cluster,
        )
        assert client.get(f"{admin}/health", timeout=5).status_code == 200
        before = call(client, f"{ingress}/Greeter/greet", "Alice")
        assert before.status_code == 200 and before.json() == "Hello Alice", before.text

        kafka_broker.stop()

        # Health says so, in each surface's error shape.
        wait_for(
            "ingress /health 503",
            lambda: client.get(f"{ingress}/restate/health", timeout=5).status_code == 503,
            30,
            cluster,
        )
        down = client.get(f"{ingress}/restate/health", timeout=5)
        message = ingress_error(down, 503)
        assert message.startswith("the ingress is not healthy: ") and "Kafka is unreachable" in message
        assert down.json()["kafka"]["reachable"] is False and down.json()["registry"]["current"] is False
        wait_for(
            "admin /health 503",
            lambda: client.get(f"{admin}/health", timeout=5).status_code == 503,
            30,
            cluster,
        )
        assert "Kafka is unreachable" in admin_error(client.get(f"{admin}/health", timeout=5), 503)
        details = client.get(f"{admin}/health/details", timeout=5)
        assert details.status_code == 503 and details.json()["kafka"]["reachable"] is False, details.text

        # A call fails within the delivery bound, in Restate's shape.
        started = time.monotonic()
        during = call(client, f"{ingress}/Greeter/greet", "Bob", timeout_s=DELIVERY_TIMEOUT_S + 30)
        took = time.monotonic() - started
        message = ingress_error(during, 503)
        assert message.startswith("cannot append the invocation to the log: "), message
        assert took < DELIVERY_TIMEOUT_S + MARGIN_S, took

        # A registry write fails within its bounds, in the admin's shape.
        started = time.monotonic()
        write = client.post(
            f"{admin}/kafka-clusters",
            json={"name": "during-outage", "properties": {"bootstrap.servers": "127.0.0.1:1"}},
            timeout=WRITE_DELIVERY_TIMEOUT_S + READ_YOUR_WRITES_TIMEOUT_S + 30,
        )
        took = time.monotonic() - started
        assert "registry write" in admin_error(write, 503)
        assert took < WRITE_DELIVERY_TIMEOUT_S + MARGIN_S, took

        kafka_broker.start(90)

        wait_for(
            "ingress /health 200",
            lambda: client.get(f"{ingress}/restate/health", timeout=5).status_code == 200,
            60,
            cluster,
        )
        back = client.get(f"{ingress}/restate/health", timeout=5).json()
        assert "Greeter" in back["services"] and back["kafka"]["reachable"] is True
        wait_for(
            "admin /health 200",
            lambda: client.get(f"{admin}/health", timeout=5).status_code == 200,
            60,
            cluster,
        )
        for name in ("admin", "ingress"):
            proc = cluster[name].proc
            log_tail = cluster[name].log_text()[-4000:]
            assert proc is not None and proc.poll() is None, f"{name} exited:\n{log_tail}"

        # The ingress appends again (a send needs no processor to be answered) ...
        sent = call(client, f"{ingress}/Greeter/greet/send", "Dan", timeout_s=30)
        assert sent.status_code == 202 and sent.json()["status"] == "Accepted", sent.text
        # ... and a call gets its result again, once the processor is back at work.
        processor = cluster["processor"].proc
        if processor is not None and processor.poll() is not None:
            # The processor's own recovery is not what this test is about: start it again.
            cluster["processor"].start(60)
        try:
            after = call(client, f"{ingress}/Greeter/greet", "Carol")
        except httpx.ReadTimeout:
            pytest.fail(
                "no result for a call after the broker restart (is the processor stuck?)\n"
                + cluster["processor"].log_text()[-6000:],
                pytrace=False,
            )
        assert after.status_code == 200 and after.json() == "Hello Carol", after.text
        created = client.post(
            f"{admin}/kafka-clusters",
            json={"name": "after-outage", "properties": {"bootstrap.servers": "127.0.0.1:1"}},
            timeout=60,
        )
        assert created.status_code == 201, created.text
