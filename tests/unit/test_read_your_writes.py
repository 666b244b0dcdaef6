"""Read-your-writes across processes, on fakes: `TopicView.catch_up` waits until the view has
applied what the topic holds when it is called, and the ingress looks a missing service or
handler up again after catching up before it answers 404."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingress_gateway.server import Ingress
from kafka_core import views as views_mod
from kafka_core.results import ResultsListener
from kafka_core.views import TopicView
from schemas.ids import InvocationId
from schemas.records import Command
from schemas.registry import HandlerRecord, Registry, ServiceRecord
from schemas.settings import Settings
from tests.support.fake_kafka import FakeCluster, FakeConsumer, FakeMessage

SETTINGS = Settings(topic_prefix="unit")
TOPIC = "unit.metadata"


# -- TopicView.catch_up ----------------------------------------------------------------------------


class GatedCluster(FakeCluster):
    """Consumers that deliver nothing while `gate` is clear: a view that lags behind its topic."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def consumer_factory(self, config: dict[str, Any]) -> FakeConsumer:
        consumer = GatedConsumer(self, config)
        self.consumers.append(consumer)
        return consumer


class GatedConsumer(FakeConsumer):
    cluster: GatedCluster

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        if not self.cluster.gate.is_set():
            time.sleep(0.01)
            return None
        return super().poll(timeout)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> GatedCluster:
    cluster = GatedCluster()
    cluster.create(TOPIC, 1)
    monkeypatch.setattr(views_mod, "Consumer", cluster.consumer_factory)
    return cluster


@pytest.fixture
def view(cluster: GatedCluster) -> Iterator[tuple[TopicView, list[str]]]:
    seen: list[str] = []
    view = TopicView(SETTINGS, TOPIC, lambda k, v, p, o: seen.append(k), name="ryw").start(5)
    try:
        yield view, seen
    finally:
        view.stop()


def test_catch_up_waits_for_what_the_topic_holds_when_called(
    cluster: GatedCluster, view: tuple[TopicView, list[str]]
) -> None:
    topic_view, seen = view
    cluster.gate.clear()  # the view stops reading: written elsewhere, not read here yet
    cluster.append(TOPIC, b"service/Greeter", b"v", partition=0)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (topic_view.catch_up(5.0), done.set()), daemon=True)
    waiter.start()
    assert not done.wait(0.3) and seen == []
    cluster.gate.set()
    assert done.wait(5.0)
    assert seen == ["service/Greeter"]
    waiter.join(1)


def test_catch_up_is_bounded(cluster: GatedCluster, view: tuple[TopicView, list[str]]) -> None:
    topic_view, _ = view
    cluster.gate.clear()
    cluster.append(TOPIC, b"service/Greeter", b"v", partition=0)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not reach \{0: 1\} within 0.3s"):
        topic_view.catch_up(0.3)
    assert time.monotonic() - started < 2


def test_catch_up_with_nothing_new_returns_at_once(view: tuple[TopicView, list[str]]) -> None:
    topic_view, _ = view
    started = time.monotonic()
    for _ in range(20):
        topic_view.catch_up(5.0)
    assert time.monotonic() - started < 1


# -- the ingress: a missing target is looked up again after catching up ---------------------------


def greeter(handlers: tuple[str, ...] = ("greet",)) -> ServiceRecord:
    return ServiceRecord(
        name="Greeter",
        ty="Service",
        revision=1,
        deployment_id="dp_1",
        handlers=[HandlerRecord(name=h, ty=None, output_content_type="application/json") for h in handlers],
    )


class LaggingMetadata:
    """A registry view that learns of `pending` only when it catches up."""

    def __init__(self) -> None:
        self._registry = Registry()
        self.pending: ServiceRecord | None = None
        self.catch_ups = 0
        self.fail: str | None = None

    def registry(self) -> Registry:
        return self._registry

    def health(self) -> str | None:
        return None

    def catch_up(self, timeout_s: float = 5.0) -> None:
        self.catch_ups += 1
        if self.fail is not None:
            raise TimeoutError(self.fail)
        if self.pending is not None:
            self._registry.services[self.pending.name] = self.pending
            self.pending = None


class Commands:
    def __init__(self) -> None:
        self.results: ResultsListener | None = None
        self.sent: list[Command] = []

    async def start(self) -> None:
        self.results = ResultsListener(SETTINGS, asyncio.get_running_loop())

    async def stop(self) -> None:
        pass

    def health(self) -> str | None:
        return None

    async def send(self, invocation_id: InvocationId, command: Command) -> None:
        self.sent.append(command)


@pytest.fixture
def metadata() -> LaggingMetadata:
    return LaggingMetadata()


@pytest.fixture
async def ingress(metadata: LaggingMetadata) -> AsyncIterator[TestClient]:
    server = Ingress(SETTINGS, metadata, commands=Commands())  # type: ignore[arg-type]
    async with TestClient(TestServer(server.app())) as client:
        yield client


async def test_a_service_registered_elsewhere_is_found_after_catching_up(
    ingress: TestClient, metadata: LaggingMetadata
) -> None:
    metadata.pending = greeter()
    r = await ingress.post("/Greeter/greet/send")
    assert r.status == 202, await r.text()
    assert metadata.catch_ups == 1
    r = await ingress.post("/Greeter/greet/send")  # known now: no more catching up
    assert r.status == 202 and metadata.catch_ups == 1


async def test_a_new_handler_is_found_after_catching_up(
    ingress: TestClient, metadata: LaggingMetadata
) -> None:
    metadata.registry().services["Greeter"] = greeter()
    metadata.pending = greeter(("greet", "wave"))  # a new revision, registered elsewhere
    r = await ingress.post("/Greeter/wave/send")
    assert r.status == 202, await r.text()
    assert metadata.catch_ups == 1


async def test_unknown_after_catching_up_is_restates_404(
    ingress: TestClient, metadata: LaggingMetadata
) -> None:
    r = await ingress.post("/Nope/greet")
    assert r.status == 404
    assert (await r.json())["message"] == (
        "service 'Nope' not found, make sure to register the service before calling it."
    )
    assert metadata.catch_ups == 1
    r = await ingress.post("/restate/nope/Greeter/greet")  # a path error, not a registry miss
    assert r.status == 404 and metadata.catch_ups == 1


async def test_a_registry_that_cannot_catch_up_is_503_not_404(
    ingress: TestClient, metadata: LaggingMetadata
) -> None:
    metadata.fail = "Kafka does not answer"
    r = await ingress.post("/Greeter/greet")
    assert r.status == 503
    message = (await r.json())["message"]
    assert "cannot tell whether the target is registered: Kafka does not answer" in message
