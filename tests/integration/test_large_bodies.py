"""Request bodies and results up to Restate's 32 MiB, end to end: a real broker, admin, ingress and
processor as processes, a real Python SDK deployment (examples/python/large_bodies.py).

Every hop carries the body: the ingress's Invoke record on `commands`, the input entry in the
changelog, the journaled `ctx.run` result and the output in the processor's records, the result
on `results` back to the ingress, HTTP/2 to the deployment and back. Over 32 MiB the ingress
answers 413 as Restate does. An existing topic made with a smaller limit is raised at start-up.
The processor does not keep the large payloads in memory."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from ingress_gateway.limits import REQUEST_SIZE_LIMIT
from kafka_core.kafka import create_topics
from schemas.settings import DEFAULT_MAX_RECORD_BYTES, Settings, topic_max_message_bytes
from schemas.topics import Topics
from tests.conftest import free_port
from tests.support.cluster import SdkDeployment, StackClient, json_lines, module_stack
from tests.support.processes import Component

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}
MiB = 1024 * 1024


class Large(StackClient):
    """A stack serving examples/python/large_bodies.py, with one partition and one processor."""

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env

    def cpu_s(self) -> dict[str, float]:
        """User + system CPU seconds each component process has used so far (Linux /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for name, part in self.stack.components().items():
            assert part.proc is not None
            fields = Path(f"/proc/{part.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        return out


@contextlib.contextmanager
def large_stack(kafka_bootstrap: str, base: Path, **processor_env: str) -> Iterator[Large]:
    app = "examples.python.large_bodies:app"
    with (
        module_stack(kafka_bootstrap, base, app, partitions=1, processor_env=processor_env) as stack,
        httpx.Client(timeout=120) as client,
    ):
        yield Large(stack, client)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Large]:
    with large_stack(kafka_bootstrap, tmp_path_factory.mktemp("large")) as large:
        yield large


def test_a_30_mib_body_comes_back_from_the_handler(stack: Large) -> None:
    """Input, output and the result on `results` each hold the 30 MiB."""
    text = "a" * (30 * MiB - 2) + "z"  # a JSON string of 30 MiB, distinguishable at its end
    body = json.dumps(text).encode()
    cpu_before, started = stack.cpu_s(), time.monotonic()
    r = stack.client.post(f"{stack.ingress}/Big/echo", content=body, headers=JSON)
    elapsed = time.monotonic() - started
    cpu = {k: round(v - cpu_before[k], 2) for k, v in stack.cpu_s().items()}
    assert r.status_code == 200, r.text[:500]
    assert len(r.content) == len(body) and r.json() == text
    print(f"30 MiB echo: {elapsed:.2f}s wall, component CPU seconds {cpu}")
    assert elapsed < 60


def test_a_30_mib_side_effect_is_journaled_and_returned(stack: Large) -> None:
    """`ctx.run` journals the 30 MiB (a record of its own) before the handler returns it."""
    text = "r" * (30 * MiB - 3)
    r = stack.client.post(f"{stack.ingress}/Big/echo_run", content=json.dumps(text), headers=JSON)
    assert r.status_code == 200, r.text[:500]
    assert r.json() == text


def test_a_body_at_32_mib_is_taken_and_one_byte_more_is_413(stack: Large) -> None:
    """Restate's limits: a content-length over 32 MiB is tower-http's plain-text 413; a chunked
    body that grows over it is refused while read, in the ingress's JSON error shape."""
    at_limit = json.dumps("b" * (REQUEST_SIZE_LIMIT - 2)).encode()
    assert len(at_limit) == REQUEST_SIZE_LIMIT
    ok = stack.client.post(f"{stack.ingress}/Big/echo", content=at_limit, headers=JSON)
    assert ok.status_code == 200, ok.text[:500]
    assert ok.content == at_limit

    over = at_limit[:-1] + b' "'  # one byte more: still the size of a JSON string
    refused = stack.client.post(f"{stack.ingress}/Big/echo", content=over, headers=JSON)
    assert refused.status_code == 413
    assert refused.text == "length limit exceeded"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(over), MiB):
            yield over[i : i + MiB]

    chunked = stack.client.post(f"{stack.ingress}/Big/echo", content=chunks(), headers=JSON)
    assert chunked.status_code == 413
    assert chunked.headers["x-restate-error-source"] == "ingress"
    assert chunked.json() == {
        "code": 413,
        "message": "cannot read body: LengthLimitError",
        "source": "ingress",
    }


def test_a_body_over_the_record_limit_is_413_in_the_json_shape(stack: Large, tmp_path: Path) -> None:
    """An ingress whose KINVOKE_MAX_RECORD_BYTES is below the body (Restate would take it): the
    Invoke cannot be one record, so 413 at once, not a retry or a 503."""
    port = free_port()
    small = Component(
        "ingress",
        {**stack.env, "KINVOKE_INGRESS_PORT": str(port), "KINVOKE_MAX_RECORD_BYTES": str(MiB)},
        tmp_path,
        port,
    )
    small.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while "Big" not in stack.client.get(f"{url}/restate/health").json()["services"]:
            assert time.monotonic() < deadline, "the second ingress never learnt of Big"
            time.sleep(0.1)
        text = "s" * (2 * MiB)
        r = stack.client.post(f"{url}/Big/echo", content=json.dumps(text), headers=JSON)
        assert r.status_code == 413, r.text[:500]
        body = r.json()
        assert set(body) == {"code", "message", "source"} and body["code"] == 413
        assert body["message"].startswith("cannot append") and "MSG_SIZE_TOO_LARGE" in body["message"]
        small_ok = stack.client.post(f"{url}/Big/echo", content=json.dumps("fits"), headers=JSON)
        assert small_ok.status_code == 200 and small_ok.json() == "fits"
    finally:
        small.stop()


def test_an_existing_topic_with_a_smaller_record_limit_is_raised(kafka_bootstrap: str) -> None:
    """Topics made before KINVOKE_MAX_RECORD_BYTES (or by hand, with the broker's 1 MiB) would
    refuse large requests long after start-up: `create_topics` raises their max.message.bytes."""
    settings = Settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}", partitions=1
    )
    commands = Topics(settings.topic_prefix).commands
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    old = {"cleanup.policy": "delete", "max.message.bytes": str(1024 * 1024 + 12)}
    admin.create_topics([NewTopic(commands, num_partitions=1, replication_factor=1, config=old)])[
        commands
    ].result(30)

    created = create_topics(settings)

    assert commands not in created and len(created) == 4
    want = str(topic_max_message_bytes(DEFAULT_MAX_RECORD_BYTES))
    resources = [ConfigResource(ResourceType.TOPIC, t.name) for t in Topics(settings.topic_prefix).specs(1)]

    def limits() -> dict[str, str]:
        return {
            r.name: f.result(30)["max.message.bytes"].value
            for r, f in admin.describe_configs(resources).items()
        }

    # The controller has committed the change when it answers; the broker applies it from the
    # metadata log a moment later.
    deadline = time.monotonic() + 15
    while set(limits().values()) != {want}:
        assert time.monotonic() < deadline, limits()
        time.sleep(0.2)


def test_a_standalone_processor_and_ingress_raise_the_limits_of_topics_made_elsewhere(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`kinvoke ingress` and `kinvoke processor` started on their own, against topics made by hand
    with the broker's 1 MiB: each raises the limit of the topics it writes at start-up (as
    `kinvoke topics` and `kinvoke dev` do) and says so, instead of failing large requests later."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    topics = Topics(prefix)
    small = str(1024 * 1024 + 12)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    specs = topics.specs(1)
    futures = admin.create_topics(
        [
            NewTopic(
                t.name, t.partitions, replication_factor=1, config={**t.config, "max.message.bytes": small}
            )
            for t in specs
        ]
    )
    for fut in futures.values():
        fut.result(30)
    resources = [ConfigResource(ResourceType.TOPIC, t.name) for t in specs]
    want = str(topic_max_message_bytes(DEFAULT_MAX_RECORD_BYTES))

    def limits() -> dict[str, str]:
        return {
            r.name: f.result(30)["max.message.bytes"].value
            for r, f in admin.describe_configs(resources).items()
        }

    def wait_for(expected: dict[str, str], part: Component) -> None:
        deadline = time.monotonic() + 60
        while limits() != expected:
            assert part.proc is not None and part.proc.poll() is None, part.log_text()[-3000:]
            assert time.monotonic() < deadline, (limits(), part.log_text()[-3000:])
            time.sleep(0.3)

    def raised(part: Component) -> list[str]:
        events = [e for e in json_lines(part.log_text()) if e.get("event") == "topics.record_limit_raised"]
        assert len(events) == 1 and events[0]["max_message_bytes"] == int(want), part.log_text()[-3000:]
        return sorted(events[0]["topics"])

    ingress_port = free_port()
    env = {
        "KINVOKE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KINVOKE_TOPIC_PREFIX": prefix,
        "KINVOKE_PARTITIONS": "1",
        "KINVOKE_INGRESS_PORT": str(ingress_port),
        "KINVOKE_PROCESSOR_GROUP_ID": f"{prefix}-processor",
        "KINVOKE_STATE_DIR": str(tmp_path / "state"),
    }
    ingress = Component("ingress", env, tmp_path, ingress_port)
    processor = Component("processor", env, tmp_path)
    try:
        ingress.start()
        # The ingress writes `commands` only.
        wait_for({t.name: want if t.name == topics.commands else small for t in specs}, ingress)
        assert raised(ingress) == [topics.commands]
        processor.start()
        # The processor writes the others but `metadata` (the admin's).
        wait_for({t.name: small if t.name == topics.metadata else want for t in specs}, processor)
        assert raised(processor) == sorted([topics.changelog, topics.results, topics.commands_dlq])
    finally:
        processor.stop()
        ingress.stop()


def test_the_processors_memory_does_not_grow_with_each_large_call(stack: Large) -> None:
    """Decoded journals and results are dropped once they hold 64 MiB (they are on disk): before,
    each 30 MiB call kept ~120 MiB in the processor for good."""

    def rss_mib() -> float:
        part = stack.stack.procs["processor"]
        assert part.proc is not None
        status = Path(f"/proc/{part.proc.pid}/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]) / 1024

    def echo(i: int) -> None:
        text = str(i) * (30 * MiB - 2)
        r = stack.client.post(f"{stack.ingress}/Big/echo", content=json.dumps(text), headers=JSON)
        assert r.status_code == 200 and r.json() == text

    echo(0)
    first = rss_mib()
    for i in range(1, 9):
        echo(i)
    assert rss_mib() - first < 400, (first, rss_mib())


def test_an_attempt_whose_output_is_over_the_record_limit_fails_with_a_clear_message(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A processor allowing 4 MiB records, a 6 MiB output: the attempt's effect can never be
    written, so the attempt fails (and is retried) saying why, instead of hanging on retries."""
    with large_stack(kafka_bootstrap, tmp_path, KINVOKE_MAX_RECORD_BYTES=str(4 * MiB)) as stack:
        sent = stack.client.post(
            f"{stack.ingress}/Big/double/send", content=json.dumps("d" * (3 * MiB)), headers=JSON
        )
        assert sent.status_code == 202, sent.text
        invocation_id = sent.json()["invocationId"]
        admin = stack.env["KINVOKE_ADMIN_PORT"]
        sql = f"SELECT last_failure FROM sys_invocation WHERE id = '{invocation_id}'"
        deadline, rows = time.monotonic() + 60, []
        while not (rows and rows[0].get("last_failure")):  # /query leaves out nulls, as Restate does
            assert time.monotonic() < deadline, rows
            time.sleep(0.5)
            r = stack.client.post(
                f"http://127.0.0.1:{admin}/query", json={"query": sql}, headers={"accept": "application/json"}
            )
            assert r.status_code == 200, r.text
            rows = r.json()["rows"]
        failure = rows[0]["last_failure"]
        assert (
            "do not fit in one Kafka record" in failure and f"KINVOKE_MAX_RECORD_BYTES={4 * MiB}" in failure
        )


def test_a_30_mib_body_goes_over_http_1_1_too(stack: Large, tmp_path: Path) -> None:
    """A deployment registered with `use_http_11` (request-response, httpx) carries it both ways.
    Registered as a new deployment of Big (then stopped), so it runs last."""
    h1 = SdkDeployment(tmp_path, app="examples.python.large_bodies:app").start()
    try:
        admin = stack.env["KINVOKE_ADMIN_PORT"]
        r = stack.client.post(
            f"http://127.0.0.1:{admin}/deployments", json={"uri": h1.uri, "use_http_11": True, "force": True}
        )
        assert r.status_code == 201, r.text
        dep_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while stack.client.get(f"http://127.0.0.1:{admin}/services/Big").json()["deployment_id"] != dep_id:
            assert time.monotonic() < deadline, "Big never moved to the HTTP/1.1 deployment"
            time.sleep(0.1)
        text = "h" * (30 * MiB - 2)
        echoed = stack.client.post(f"{stack.ingress}/Big/echo_run", content=json.dumps(text), headers=JSON)
        assert echoed.status_code == 200, echoed.text[:500]
        assert echoed.json() == text
    finally:
        h1.stop()
