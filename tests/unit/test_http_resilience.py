"""The ingress and admin HTTP surfaces when Kafka does not answer: bounded waits, Restate's error
shapes (ingress `{"code", "message"}`, admin `{"message", "restate_code"}`) and `/health`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from admin_api import app as admin_app
from admin_api.invocations import KafkaInvocationControl
from admin_api.store import MemoryRegistryStore
from ingress_gateway.server import Ingress
from kafka_core import supervision
from kafka_core.results import ResultsListener
from kafka_core.supervision import Unavailable, WaitTimeout
from schemas.ids import InvocationId, awakeable_id
from schemas.records import Command, InvocationResult, Success
from schemas.registry import HandlerRecord, Registry, ServiceRecord
from schemas.settings import Settings

SETTINGS = Settings(topic_prefix="unit")


class FakeMetadata:
    def __init__(self) -> None:
        self._registry = Registry()
        self._registry.services["Greeter"] = ServiceRecord(
            name="Greeter",
            ty="Service",
            revision=1,
            deployment_id="dp_1",
            handlers=[HandlerRecord(name="greet", ty=None, output_content_type="application/json")],
        )
        self.problem: str | None = None
        self.behind: str | None = None  # why catch_up times out

    def registry(self) -> Registry:
        return self._registry

    def health(self) -> str | None:
        return self.problem

    def catch_up(self, timeout_s: float) -> None:
        if self.behind is not None:
            raise TimeoutError(self.behind)


class FakeCommands:
    """What the ingress and admin use of `CommandClient`, with a real (unstarted) results table."""

    def __init__(self) -> None:
        self.results: ResultsListener | None = None
        self.send_error: BaseException | None = None
        self.sent: list[tuple[InvocationId, Command]] = []
        self.problem: str | None = None

    async def start(self) -> None:
        self.results = ResultsListener(SETTINGS, asyncio.get_running_loop())

    async def stop(self) -> None:
        pass

    def health(self) -> str | None:
        return self.problem

    async def send(self, invocation_id: InvocationId, command: Command) -> None:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((invocation_id, command))


@pytest.fixture
def commands() -> FakeCommands:
    return FakeCommands()


@pytest.fixture
def metadata() -> FakeMetadata:
    return FakeMetadata()


@pytest.fixture
async def ingress(commands: FakeCommands, metadata: FakeMetadata) -> AsyncIterator[TestClient]:
    server = Ingress(SETTINGS, metadata, commands=commands, answer_timeout_s=0.3)  # type: ignore[arg-type]
    async with TestClient(TestServer(server.app())) as client:
        yield client


async def error_of(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) >= {"code", "message"} and body["code"] == status
    assert response.headers["x-restate-error-source"] == "ingress"
    return str(body["message"])


async def test_a_command_kafka_does_not_take_is_503_in_restates_shape(
    ingress: TestClient, commands: FakeCommands
) -> None:
    commands.send_error = Unavailable(
        "Kafka did not take the command: _MSG_TIMED_OUT: Local: Message timed out"
    )
    message = await error_of(await ingress.post("/Greeter/greet"), 503)
    assert message.startswith("cannot append the invocation to the log: Kafka did not take the command")
    commands.send_error = WaitTimeout(
        "Kafka did not acknowledge the command within 10s; it may still be written"
    )
    message = await error_of(await ingress.post("/Greeter/greet/send"), 503)
    assert "did not acknowledge the command within 10s" in message


async def test_an_unexpected_produce_error_is_500_not_silence(
    ingress: TestClient, commands: FakeCommands
) -> None:
    commands.send_error = RuntimeError("bug")
    assert "RuntimeError: bug" in await error_of(await ingress.post("/Greeter/greet"), 500)


async def test_an_unacknowledged_idempotent_send_is_504_within_the_bound(
    ingress: TestClient, commands: FakeCommands
) -> None:
    started = time.monotonic()
    r = await ingress.post("/Greeter/greet/send", headers={"idempotency-key": "k1"})
    message = await error_of(r, 504)
    assert time.monotonic() - started < 5
    assert "no processor acknowledged it within 0.3s" in message and r.headers["x-restate-id"].startswith(
        "inv_"
    )
    assert len(commands.sent) == 1


async def test_output_without_an_answer_is_504(ingress: TestClient) -> None:
    inv = InvocationId.generate(1, 1, 1)
    message = await error_of(await ingress.get(f"/restate/invocation/{inv}/output"), 504)
    assert message == f"no processor answered within 0.3s (invocation {inv})"


async def test_a_waiting_call_answers_503_when_the_results_tail_gives_up(
    ingress: TestClient, commands: FakeCommands, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervision, "fatal", lambda *a, **k: None)
    call = asyncio.create_task(ingress.post("/Greeter/greet"))
    while not commands.sent:
        await asyncio.sleep(0.01)
    assert commands.results is not None
    commands.results._give_up("results", "failed 10 times")  # noqa: SLF001 - what the supervisor does
    message = await error_of(await asyncio.wait_for(call, 5), 503)
    assert "the results tail gave up (failed 10 times)" in message
    # Later calls do not wait at all.
    message = await error_of(await asyncio.wait_for(ingress.post("/Greeter/greet"), 5), 503)
    assert "the results tail gave up" in message


async def test_a_call_gets_its_result(ingress: TestClient, commands: FakeCommands) -> None:
    call = asyncio.create_task(ingress.post("/Greeter/greet"))
    while not commands.sent:
        await asyncio.sleep(0.01)
    inv = str(commands.sent[0][0])
    assert commands.results is not None
    commands.results._deliver(  # noqa: SLF001 - as the tail does for a record of `results`
        InvocationResult(invocation_id=inv, result=Success(value=b'"hi"'), completed_at_ms=1)
    )
    r = await asyncio.wait_for(call, 5)
    assert r.status == 200 and await r.json() == "hi"


async def test_awakeable_completion_kafka_does_not_take_is_503(
    ingress: TestClient, commands: FakeCommands
) -> None:
    commands.send_error = Unavailable("the command producer is being recreated after a fatal error (x)")
    awk = awakeable_id(InvocationId.generate(1, 1, 1).to_bytes(), 1)
    message = await error_of(await ingress.post(f"/restate/awakeables/{awk}/resolve", data=b"1"), 503)
    assert message.startswith(
        "cannot append the completion to the log: the command producer is being recreated"
    )


async def test_ingress_health(ingress: TestClient, commands: FakeCommands, metadata: FakeMetadata) -> None:
    r = await ingress.get("/restate/health")
    assert r.status == 200
    assert await r.json() == {
        "services": ["Greeter"],  # Restate's field; kinvoke's beside it
        "kafka": {"reachable": True, "problem": None},
        "registry": {"current": True, "problem": None},
    }
    metadata.behind = "view of x-unit.metadata did not reach {0: 7} within 2s"
    r = await ingress.get("/restate/health")
    assert r.status == 200  # behind is not down: the services it knows are still served
    assert (await r.json())["registry"] == {"current": False, "problem": metadata.behind}
    metadata.behind = None
    commands.problem = "command producer: Kafka is unreachable (1/1 brokers are down)"
    r = await ingress.get("/restate/health")
    message = await error_of(r, 503)
    assert (
        message == "the ingress is not healthy: command producer: Kafka is unreachable (1/1 brokers are down)"
    )
    body = await r.json()
    assert body["kafka"] == {"reachable": False, "problem": commands.problem}
    assert body["registry"]["current"] is False
    commands.problem = None
    metadata.problem = "metadata-x-unit.metadata is down: RuntimeError: boom"
    assert "metadata-x-unit.metadata is down" in await error_of(await ingress.get("/restate/health"), 503)
    metadata.problem = None
    assert (await ingress.get("/restate/health")).status == 200


# -- admin ----------------------------------------------------------------------------------------


class FlakyStore(MemoryRegistryStore):
    def __init__(self) -> None:
        super().__init__()
        self.problem: str | None = None
        self.behind: str | None = None
        self.write_error: BaseException | None = None

    def health(self) -> str | None:
        return self.problem

    def catch_up(self, timeout_s: float) -> None:
        if self.behind is not None:
            raise TimeoutError(self.behind)

    async def write(self, records: list[tuple[str, bytes | None]]) -> None:
        if self.write_error is not None:
            raise self.write_error
        await super().write(records)


@pytest.fixture
async def admin(commands: FakeCommands) -> AsyncIterator[tuple[TestClient, FlakyStore]]:
    store = FlakyStore()
    control = KafkaInvocationControl(commands, answer_timeout_s=0.3)  # type: ignore[arg-type]
    app = admin_app.create_admin_app(store, SETTINGS, control)
    app.on_startup.append(lambda _app: commands.start())
    async with TestClient(TestServer(app)) as client:
        yield client, store


async def admin_error_of(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"message", "restate_code"}
    return str(body["message"])


async def test_admin_health(admin: tuple[TestClient, FlakyStore], commands: FakeCommands) -> None:
    client, store = admin
    for prefix in ("", "/v4"):
        r = await client.get(f"{prefix}/health")
        assert r.status == 200 and await r.read() == b""
    store.problem = "view kinvoke.metadata: Kafka is unreachable (1/1 brokers are down)"
    commands.problem = "the command producer is unusable: _FATAL: x"
    message = await admin_error_of(await client.get("/v3/health"), 503)
    assert message == (
        "the admin API is not healthy: view kinvoke.metadata: Kafka is unreachable (1/1 brokers are down); "
        "the command producer is unusable: _FATAL: x"
    )


async def test_admin_registry_write_kafka_does_not_take_is_503(admin: tuple[TestClient, FlakyStore]) -> None:
    client, store = admin
    store.write_error = Unavailable("the metadata producer failed (_FATAL: x) and was recreated; retry")
    r = await client.post("/kafka-clusters", json={"name": "c", "properties": {"bootstrap.servers": "h:1"}})
    assert "the metadata producer failed" in await admin_error_of(r, 503)
    store.write_error = None
    r = await client.post("/kafka-clusters", json={"name": "c", "properties": {"bootstrap.servers": "h:1"}})
    assert r.status == 201, await r.text()


async def test_admin_cancel_without_an_answer_is_503_within_the_bound(
    admin: tuple[TestClient, FlakyStore], commands: FakeCommands
) -> None:
    client, _ = admin
    inv = InvocationId.generate(1, 1, 1)
    started = time.monotonic()
    message = await admin_error_of(await client.patch(f"/invocations/{inv}/cancel"), 503)
    assert time.monotonic() - started < 5
    assert (
        message
        == f"the cancel request for invocation '{inv}' is in the log, but no processor answered within 0.3s"
    )
    commands.send_error = WaitTimeout(
        "Kafka did not acknowledge the command within 10s; it may still be written"
    )
    message = await admin_error_of(await client.patch(f"/invocations/{inv}/kill"), 503)
    assert message.startswith("cannot append the kill request to the log: Kafka did not acknowledge")


async def test_admin_health_details(admin: tuple[TestClient, FlakyStore], commands: FakeCommands) -> None:
    client, store = admin
    r = await client.get("/health/details")
    assert r.status == 200
    assert await r.json() == {
        "healthy": True,
        "kafka": {"reachable": True, "problem": None},
        "registry": {"current": True, "problem": None},
    }
    store.behind = "view of kinvoke.metadata did not reach {0: 3} within 2s (the view is behind)"
    r = await client.get("/health/details")
    assert r.status == 503
    assert await r.json() == {
        "healthy": False,
        "kafka": {"reachable": True, "problem": None},
        "registry": {"current": False, "problem": store.behind},
    }
    store.behind = None
    commands.problem = "the command producer is unusable: _FATAL: x"
    r = await client.get("/health/details")
    assert r.status == 503
    body = await r.json()
    assert body["kafka"] == {"reachable": False, "problem": commands.problem}
    assert body["registry"] == {"current": False, "problem": "not checked: Kafka is unreachable"}


# -- /metrics -------------------------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_ingress_metrics_time_requests_by_kind_and_status(
    ingress: TestClient, commands: FakeCommands
) -> None:
    health = {"kind": "health", "status": "200"}
    unavailable = {"kind": "call", "status": "503"}
    before = _sample("kinvoke_ingress_request_duration_seconds_count", **health)
    before_503 = _sample("kinvoke_ingress_request_duration_seconds_count", **unavailable)
    assert (await ingress.get("/restate/health")).status == 200
    commands.send_error = Unavailable("the command producer is being recreated after a fatal error (x)")
    assert (await ingress.post("/Greeter/greet")).status == 503
    r = await ingress.get("/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    text = await r.text()
    assert 'kinvoke_ingress_request_duration_seconds_count{kind="health",status="200"}' in text
    assert _sample("kinvoke_ingress_request_duration_seconds_count", **health) - before == 1
    assert _sample("kinvoke_ingress_request_duration_seconds_count", **unavailable) - before_503 == 1


async def test_admin_metrics_time_requests_by_route(admin: tuple[TestClient, FlakyStore]) -> None:
    client, _ = admin
    labels = {"method": "GET", "route": "/services/{service}", "status": "404"}
    before = _sample("kinvoke_admin_request_duration_seconds_count", **labels)
    assert (await client.get("/services/Nope")).status == 404
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE kinvoke_admin_request_duration_seconds histogram" in await r.text()
    assert _sample("kinvoke_admin_request_duration_seconds_count", **labels) - before == 1
