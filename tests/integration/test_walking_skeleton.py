"""End to end: real broker, admin/ingress/processor as separate processes, a real Python SDK
deployment. Register, call, SIGKILL the processor, restart it, and call again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from kafka_core.kafka import create_topics, producer_config, read_to_end
from processor.replay import replay_partition, verify
from processor.storage import PartitionStore
from schemas.ids import InvocationId, awakeable_id
from schemas.partitioner import partition_of, routing_key
from schemas.records import (
    Command,
    InvocationPhase,
    InvocationResult,
    InvocationStatus,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
    Success,
)
from schemas.service_protocol import Frame, MessageType
from schemas.settings import Settings
from schemas.topics import Topics
from tests.conftest import free_port
from tests.support.processes import Component
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture
def cluster(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[dict[str, Component]]:
    admin_port, ingress_port = free_port(), free_port()
    env = {
        "KINVOKE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KINVOKE_TOPIC_PREFIX": topic_prefix,
        "KINVOKE_PARTITIONS": str(PARTITIONS),
        "KINVOKE_ADMIN_PORT": str(admin_port),
        "KINVOKE_INGRESS_PORT": str(ingress_port),
        "KINVOKE_PROCESSOR_GROUP_ID": f"{topic_prefix}-processor",
    }
    create_topics(
        Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, partitions=PARTITIONS)
    )
    parts = {
        "admin": Component("admin", env, tmp_path, admin_port),
        "ingress": Component("ingress", env, tmp_path, ingress_port),
        "processor": Component("processor", env, tmp_path),
    }
    try:
        for c in parts.values():
            c.start()
        yield parts
    finally:
        for c in parts.values():
            c.stop()


def _consume_one(
    bootstrap: str, topic: str, match: Callable[[Message], bool], timeout_s: float = 20
) -> Message:
    """The first committed record of `topic` (from the beginning) that `match`es."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.2):
                if msg.error() is None and match(msg):
                    return msg
    finally:
        consumer.close()
    raise AssertionError(f"no matching record on {topic} within {timeout_s}s")


def _read_status(settings: Settings, invocation_id: str) -> InvocationStatus | None:
    """An invocation's status as the changelog has it (read the way a processor restores it)."""
    partition = partition_of(InvocationId.parse(invocation_id).partition_key, settings.partitions)
    store = PartitionStore(partition)
    for msg in read_to_end(settings, Topics(settings.topic_prefix).changelog, [partition]):
        store.restore(msg.key().decode(), msg.value())
    return store.status(invocation_id)


def _status(settings: Settings, invocation_id: str) -> InvocationStatus:
    status = _read_status(settings, invocation_id)
    assert status is not None, f"{invocation_id} is not in the changelog"
    return status


def _wait_status(
    settings: Settings, invocation_id: str, until: Callable[[InvocationStatus], bool], timeout_s: float = 20
) -> InvocationStatus:
    """Poll the changelog until the invocation's status satisfies `until` (an accepted send may not
    be applied yet when its 202 arrives)."""
    deadline = time.monotonic() + timeout_s
    while (status := _read_status(settings, invocation_id)) is None or not until(status):
        assert time.monotonic() < deadline, f"{invocation_id}: {status}"
        time.sleep(0.1)
    return status


def _call(client: httpx.Client, url: str, body: object) -> httpx.Response:
    return client.post(
        url, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=60
    )


def test_register_call_kill_restart(
    cluster: dict[str, Component], kafka_bootstrap: str, topic_prefix: str
) -> None:
    admin = f"http://127.0.0.1:{cluster['admin'].port}"
    ingress = f"http://127.0.0.1:{cluster['ingress'].port}"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, partitions=PARTITIONS)
    with run_sdk_deployment() as uri, httpx.Client() as client:
        reg = client.post(f"{admin}/deployments", json={"uri": uri}, timeout=30)
        assert reg.status_code == 201, reg.text
        deployment_id = reg.json()["id"]
        assert deployment_id.startswith("dp_1")
        assert {s["name"] for s in reg.json()["services"]} >= {"Greeter"}

        # The ingress learns the registry from the metadata topic.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if "Greeter" in client.get(f"{ingress}/restate/health").json()["services"]:
                break
            time.sleep(0.1)

        greet = _call(client, f"{ingress}/Greeter/greet", "Alice")
        assert greet.status_code == 200, greet.text
        assert greet.json() == "Hello Alice"
        greet_id = greet.headers["x-restate-id"]
        InvocationId.parse(greet_id)

        steps = _call(client, f"{ingress}/restate/call/Greeter/steps", 5)
        assert steps.status_code == 200, steps.text
        assert steps.json() == 5 + 1 + 2 + 3
        steps_id = steps.headers["x-restate-id"]

        # A virtual object: concurrent exclusive `add`s on one key run one at a time (each sees the
        # previous one's state), another key is independent, and the shared `get` reads the state.
        with ThreadPoolExecutor(8) as pool:
            adds = list(pool.map(lambda _: _call(client, f"{ingress}/Counter/k1/add", 1), range(8)))
        assert all(r.status_code == 200 for r in adds), [r.text for r in adds]
        assert sorted(r.json() for r in adds) == list(range(1, 9))
        assert _call(client, f"{ingress}/Counter/k2/add", 5).json() == 5
        assert client.post(f"{ingress}/Counter/k1/get", timeout=30).json() == 8
        bad_key = _call(client, f"{ingress}/Counter/add", 1)
        assert bad_key.status_code == 400

        # Idempotency keys: a repeat returns the first result (even with another body) and does
        # not run again; a repeated send is "PreviouslyAccepted".
        def idem(url: str, body: object, key: str) -> httpx.Response:
            headers = {"content-type": "application/json", "idempotency-key": key}
            return client.post(url, content=json.dumps(body), headers=headers, timeout=60)

        first = idem(f"{ingress}/Counter/idem/add", 1, "idem-1")
        assert first.status_code == 200 and first.json() == 1
        assert "idempotency-expires" not in first.headers
        for body in (1, 100):
            repeat = idem(f"{ingress}/Counter/idem/add", body, "idem-1")
            assert repeat.json() == 1
            assert repeat.headers["x-restate-id"] == first.headers["x-restate-id"]
            assert repeat.headers["idempotency-expires"].endswith("+00:00")
        assert client.get(f"{ingress}/Counter/idem/get", timeout=30).json() == 1
        send1 = idem(f"{ingress}/Greeter/greet/send", "Kim", "idem-send-1").json()
        send2 = idem(f"{ingress}/Greeter/greet/send", "Kim", "idem-send-1").json()
        assert (send1["status"], send2["status"]) == ("Accepted", "PreviouslyAccepted")
        assert send1["invocationId"] == send2["invocationId"]

        # Service-to-service: a call waits for the callee's result, a send only gets its id, calls to
        # an object go through its lock, and a callee's terminal error reaches the caller.
        called = _call(client, f"{ingress}/Caller/call_greet", "Dave")
        assert called.status_code == 200, called.text
        assert called.json() == "Greeter said: Hello Dave"
        child_id = _call(client, f"{ingress}/Caller/send_greet", "Erin").json()
        InvocationId.parse(child_id)
        assert _call(client, f"{ingress}/Caller/add_twice", "k3").json() == 2
        failed_call = _call(client, f"{ingress}/Caller/call_failing", "no luck")
        assert failed_call.status_code == 418 and failed_call.json()["message"] == "no luck"

        # Awakeables: the handler waits until someone resolves its awakeable through the ingress.
        waiting = _call(client, f"{ingress}/Greeter/approval/send", "Ann").json()["invocationId"]
        awakeable = awakeable_id(InvocationId.parse(waiting).to_bytes(), 17)  # the SDK's first awakeable
        resolved = client.post(f"{ingress}/restate/awakeables/{awakeable}/resolve", content=b'"approved"')
        assert resolved.status_code == 202
        approval = _wait_status(settings, waiting, lambda st: st.phase == InvocationPhase.COMPLETED)
        assert approval.result == Success(value=b'"Ann: approved"')
        bad = client.post(f"{ingress}/restate/awakeables/sign_1nope/resolve", content=b"1")
        assert bad.status_code == 400 and bad.json()["source"] == "ingress"

        # A workflow runs once per key; its shared handlers read its state and complete its promise.
        submitted = _call(client, f"{ingress}/Signup/wf-1/run/send", "a@example.com")
        assert submitted.status_code == 202 and submitted.json()["status"] == "Accepted"
        again_wf = _call(client, f"{ingress}/Signup/wf-1/run/send", "a@example.com").json()
        assert again_wf == {"invocationId": submitted.json()["invocationId"], "status": "PreviouslyAccepted"}
        deadline = time.monotonic() + 20
        while (
            wf_status := client.post(f"{ingress}/Signup/wf-1/status", timeout=30)
        ).json() != "awaiting-confirmation":
            assert time.monotonic() < deadline, wf_status.text
            time.sleep(0.1)
        assert _call(client, f"{ingress}/Signup/wf-1/confirm", "code-42").json() == "resolved"
        wf_id = submitted.json()["invocationId"]
        wf = _wait_status(settings, wf_id, lambda st: st.phase == InvocationPhase.COMPLETED)
        assert json.loads(wf.result.value) == {"email": "a@example.com", "confirmed_with": "code-42"}  # type: ignore[union-attr]
        rerun = _call(client, f"{ingress}/Signup/wf-1/run", "b@example.com")
        assert rerun.status_code == 409
        assert rerun.json() == {
            "code": 409,
            "message": "the workflow method was already invoked",
            "source": "invocation",
        }
        assert client.post(f"{ingress}/Signup/wf-1/status", timeout=30).json() == "confirmed"

        sent = _call(client, f"{ingress}/Greeter/greet/send", "Bob")
        assert sent.status_code == 202
        assert sent.json()["status"] == "Accepted"
        # Delayed sends start from a durable timer; a delay on a call is refused.
        before_delay = time.monotonic()
        delayed = _call(client, f"{ingress}/Counter/k4/add/send?delay=1s", 7).json()
        assert delayed["status"] == "Accepted" and delayed["executionTime"].endswith("Z")
        after = client.get(f"{ingress}/restate/invocation/{delayed['invocationId']}/attach", timeout=30)
        assert after.json() == 7 and time.monotonic() - before_delay >= 1.0
        no_delay = _call(client, f"{ingress}/Greeter/greet?delay=1s", "Judy")
        assert no_delay.status_code == 400 and "only with sends" in no_delay.json()["message"]

        # Cancel, kill and purge through the admin API.
        napper = _call(client, f"{ingress}/Greeter/nap/send", 60_000).json()["invocationId"]
        to_kill = _call(client, f"{ingress}/Greeter/nap/send", 60_000).json()["invocationId"]
        for inv in (napper, to_kill):  # both in their sleep (on an open stream) before cancel/kill
            sleeping = {
                "query": f"SELECT index FROM sys_journal WHERE id = '{inv}' AND entry_type = 'Command: Sleep'"
            }
            deadline = time.monotonic() + 30
            while not client.post(
                f"{admin}/query", json=sleeping, headers={"accept": "application/json"}
            ).json()["rows"]:
                assert time.monotonic() < deadline, client.get(f"{admin}/invocations/{inv}").text
                time.sleep(0.1)
        assert client.patch(f"{admin}/invocations/{napper}/cancel").status_code == 202
        cancelled = client.get(f"{ingress}/restate/invocation/{napper}/attach", timeout=30)
        assert cancelled.status_code == 409
        assert cancelled.json() == {"code": 409, "message": "cancelled", "source": "invocation"}
        assert client.patch(f"{admin}/invocations/{napper}/cancel").status_code == 409
        assert client.patch(f"{admin}/invocations/{to_kill}/purge").status_code == 409
        assert client.patch(f"{admin}/invocations/{to_kill}/kill").status_code == 200
        killed = client.get(f"{ingress}/restate/invocation/{to_kill}/output", timeout=30)
        assert killed.json() == {"code": 409, "message": "killed", "source": "invocation"}
        assert client.patch(f"{admin}/invocations/{to_kill}/purge").status_code == 200
        assert client.get(f"{ingress}/restate/invocation/{to_kill}/output", timeout=30).status_code == 404
        assert client.patch(f"{admin}/invocations/{to_kill}/purge").status_code == 404
        assert client.patch(f"{admin}/invocations/bogus/cancel").status_code == 400

        # Attach / output by invocation id, idempotency key and workflow key.
        bob = sent.json()["invocationId"]
        attached = client.get(f"{ingress}/restate/invocation/{bob}/attach", timeout=30)
        assert attached.status_code == 200 and attached.json() == "Hello Bob"
        output = client.get(f"{ingress}/restate/invocation/{bob}/output", timeout=30)
        assert output.json() == "Hello Bob" and output.headers["x-restate-id"] == bob
        assert output.headers["idempotency-expires"].endswith("+00:00")
        unknown = client.get(f"{ingress}/restate/invocation/{bob[:-3]}AAA/output", timeout=30)
        assert unknown.status_code == 404
        assert unknown.json() == {"code": 404, "message": "not found", "source": "invocation"}
        malformed = client.get(f"{ingress}/restate/invocation/not-an-id/attach", timeout=30)
        assert malformed.status_code == 400
        assert malformed.json()["message"] == "bad invocation id 'not-an-id': bad format"
        by_key = client.get(f"{ingress}/restate/invocation/Counter/idem/add/idem-1/output", timeout=30)
        assert by_key.status_code == 200 and by_key.json() == 1
        no_wf = client.get(f"{ingress}/restate/workflow/Signup/never/output", timeout=30)
        assert no_wf.status_code == 404
        assert no_wf.json() == {"code": 404, "message": "invocation not found", "source": "ingress"}
        wf_out = client.get(f"{ingress}/restate/workflow/Signup/wf-1/attach", timeout=30)
        assert wf_out.json() == {"email": "a@example.com", "confirmed_with": "code-42"}
        assert client.post(f"{ingress}/restate/workflow/Signup/wf-1/attach", timeout=30).status_code == 405
        pending_wf = _call(client, f"{ingress}/Signup/wf-2/run/send", "c@example.com").json()["invocationId"]
        deadline = time.monotonic() + 20
        while (
            not_ready := client.get(f"{ingress}/restate/invocation/{pending_wf}/output", timeout=30)
        ).status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert not_ready.status_code == 470
        assert not_ready.json()["message"] == "the invocation exists but has not completed yet"

        missing = _call(client, f"{ingress}/NoSuchService/greet", "x")
        assert missing.status_code == 404
        assert missing.json()["source"] == "ingress"
        assert missing.headers["x-restate-error-source"] == "ingress"
        no_handler = _call(client, f"{ingress}/Greeter/nope", "x")
        assert (
            no_handler.status_code == 404 and "handler 'nope' was not found" in no_handler.json()["message"]
        )
        wrong_type = client.post(
            f"{ingress}/Greeter/greet", content=b"Alice", headers={"content-type": "text/plain"}, timeout=10
        )
        assert wrong_type.status_code == 400
        assert wrong_type.json() == {
            "code": 400,
            "message": "input validation error: Content-type 'text/plain' does not match 'application/json'",
            "source": "ingress",
        }
        failed = _call(client, f"{ingress}/Failing/terminal", "nope")
        assert failed.status_code == 418
        assert failed.headers["x-restate-error-source"] == "invocation"
        assert failed.json() == {"code": 418, "message": "nope", "source": "invocation"}

        # Bytes that are not a kinvoke command: dead-lettered with the reason, nothing else affected.
        topics = Topics(topic_prefix)
        garbage = Producer(producer_config(settings))
        garbage.produce(topics.commands, key=b"junk", value=b"this is not avro", headers=[("trace", b"t1")])
        garbage.flush(10)
        dead = _consume_one(kafka_bootstrap, topics.commands_dlq, lambda m: m.key() == b"junk")
        headers = dict(dead.headers())
        assert dead.value() == b"this is not avro"
        assert b"Avro" in headers["kinvoke.dlq.reason"]
        assert headers["trace"] == b"t1"
        after_junk = _call(client, f"{ingress}/Greeter/greet", "Dave")
        assert after_junk.status_code == 200 and after_junk.json() == "Hello Dave"

        # Crash the processor in the middle of an attempt: no clean shutdown, its partitions'
        # transactions left as they are. The call's waiter on the ingress keeps waiting.
        # A durable sleep started before the crash is fired by the next owner.
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            pending = pool.submit(_call, client, f"{ingress}/Greeter/slow", 1.5)
            napping = pool.submit(_call, client, f"{ingress}/Greeter/nap", 2500)
            time.sleep(0.7)  # the slow attempt is running at the deployment now, the nap is suspended
            cluster["processor"].kill()
            cluster["processor"].start()
            # The new owner rebuilds the partition and re-runs the invocation that was running.
            survived = pending.result(timeout=60)
            rested = napping.result(timeout=60)
        assert survived.status_code == 200, survived.text
        assert survived.json() == "slept 1.5s"
        assert rested.status_code == 200, rested.text
        assert rested.json() == "rested 2500ms"
        assert time.monotonic() - started >= 2.5
        # Restart the others too: the registry must come back from the metadata topic alone.
        for name in ("admin", "ingress"):
            cluster[name].stop()
            cluster[name].start()

        deployments = client.get(f"{admin}/deployments").json()["deployments"]
        assert [d["id"] for d in deployments] == [deployment_id]
        assert client.get(f"{admin}/services/Greeter").status_code == 200

        again = _call(client, f"{ingress}/Greeter/greet", "Carol")
        assert again.status_code == 200, again.text
        assert again.json() == "Hello Carol"
        steps2 = _call(client, f"{ingress}/Greeter/steps", 1)
        assert steps2.json() == 1 + 1 + 2 + 3
        # Introspection: the admin API's SQL over the changelog (what `restate invocations/kv` run).
        deadline = time.monotonic() + 15
        sql = {"query": f"SELECT id, status, target FROM sys_invocation WHERE id = '{steps_id}'"}
        while not (
            rows := client.post(f"{admin}/query", json=sql, headers={"accept": "application/json"}).json()[
                "rows"
            ]
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert rows == [{"id": steps_id, "status": "completed", "target": "Greeter/steps"}]
        kv_sql = "select key, value from state where service_name = 'Counter' and service_key = 'k2' ;"
        kv = client.post(
            f"{admin}/v4/query", json={"query": kv_sql}, headers={"accept": "application/json"}
        ).json()
        assert kv == {"rows": [{"key": "count", "value": b"5".hex()}]}
        described = client.get(f"{admin}/invocations/{greet_id}").json()
        assert described["status"] == "completed" and described["target"] == "Greeter/greet"

        # A service made private through the admin API is refused by the ingress.
        assert client.patch(f"{admin}/services/Failing", json={"public": False}).json()["public"] is False
        deadline = time.monotonic() + 10
        while (private := _call(client, f"{ingress}/Failing/terminal", "x")).status_code != 400:
            assert time.monotonic() < deadline, private.text
            time.sleep(0.1)
        assert private.json() == {
            "code": 400,
            "message": "the invoked service is not public",
            "source": "ingress",
        }
        assert client.patch(f"{admin}/services/Failing", json={"public": True}).json()["public"] is True
        deadline = time.monotonic() + 10
        while _call(client, f"{ingress}/Failing/terminal", "x").status_code != 418:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        # Object state came back from the changelog with the new processor.
        assert _call(client, f"{ingress}/Counter/k1/add", 2).json() == 10
        assert client.get(f"{ingress}/Counter/k2/get", timeout=30).json() == 5

        # A retryable failure is retried with backoff (500 ms, 1 s, ...) and shows in the status.
        flaky = _call(client, f"{ingress}/Failing/flaky/send", "x")
        assert flaky.status_code == 202
        flaky_id = flaky.json()["invocationId"]

        # The same services from a second deployment registered with use_http_11: they move to it
        # (revision 2) and are invoked over HTTP/1.1 from then on.
        with run_sdk_deployment() as uri11:
            reg11 = client.post(f"{admin}/deployments", json={"uri": uri11, "use_http_11": True}, timeout=30)
            assert reg11.status_code == 201, reg11.text
            dep11 = client.get(f"{admin}/deployments/{reg11.json()['id']}").json()
            assert dep11["http_version"] == "HTTP/1.1" and dep11["protocol_type"] == "RequestResponse"
            assert client.get(f"{admin}/services/Greeter").json()["revision"] == 2
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                over11 = _call(client, f"{ingress}/Greeter/steps", 10)
                assert over11.status_code == 200
                assert over11.json() == 10 + 1 + 2 + 3
                status = _status(settings, over11.headers["x-restate-id"])
                if status.deployment_id == dep11["id"]:
                    break
                time.sleep(0.2)  # the processor's registry view may lag the admin's by a moment
            assert status.deployment_id == dep11["id"]

        # Meanwhile the flaky invocation went on failing, with backoff, on its pinned deployment.
        flaky_status = _wait_status(settings, flaky_id, lambda st: st.retry_count >= 2)
        assert flaky_status.phase == InvocationPhase.INVOKED
        assert flaky_status.retry_count >= 2
        assert flaky_status.next_retry_at_ms is not None
        assert flaky_status.last_failure is not None and "flaky: x" in flaky_status.last_failure.message

    # The completed invocations and their journals are in the changelog (what a processor rebuilds from).
    steps_pk = InvocationId.parse(steps_id).partition_key
    store = PartitionStore(partition_of(steps_pk, PARTITIONS))
    for msg in read_to_end(settings, topics.changelog, [store.partition]):
        store.restore(msg.key().decode(), msg.value())
    status = store.status(steps_id)
    assert status is not None and status.phase == InvocationPhase.COMPLETED
    kinds = [Frame.parse(e.frame).type for e in store.journal(steps_id)]
    assert kinds[0] == MessageType.INPUT_COMMAND
    assert kinds.count(MessageType.RUN_COMMAND) == 3
    assert kinds.count(MessageType.RUN_COMPLETION_NOTIFICATION) == 3
    assert kinds[-1] == MessageType.OUTPUT_COMMAND

    # The restarted processor answers from its rebuilt state: the same invocation id produced again
    # (as a user producing to `commands` directly would) returns the stored result, without rerunning.
    greet_inv = InvocationId.parse(greet_id)
    duplicate = Command(
        timestamp_ms=int(time.time() * 1000),
        body=Invoke(
            invocation_id=greet_id,
            target=InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE),
            argument=b'"Mallory"',
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
            reply_to_results=True,
        ),
    )
    results = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": "probe", "isolation.level": "read_committed"}
    )
    meta = results.list_topics(topics.results, timeout=10).topics[topics.results]
    ends = []
    for p in meta.partitions:
        _, high = results.get_watermark_offsets(TopicPartition(topics.results, p), timeout=10, cached=False)
        ends.append(TopicPartition(topics.results, p, high))
    results.assign(ends)
    producer = Producer(producer_config(settings))
    producer.produce(topics.commands, key=routing_key(greet_inv.partition_key), value=duplicate.encode())
    producer.flush(10)
    deadline = time.monotonic() + 20
    found: InvocationResult | None = None
    while found is None and time.monotonic() < deadline:
        for msg in results.consume(100, 0.2):
            if msg.error() is None and msg.key() == greet_id.encode():
                found = InvocationResult.decode(msg.value())
    results.close()
    assert found is not None, "the rebuilt processor did not answer the duplicate invocation"
    assert isinstance(found.result, Success)
    assert json.loads(found.result.value) == "Hello Alice"

    # Replaying `commands` through the state machine rebuilds exactly what the changelog holds
    # (the processor is stopped first, so both topics are read at rest).
    cluster["processor"].stop()
    for partition in range(PARTITIONS):
        assert verify(settings, partition) == []
    replayed = [line for line, _ in replay_partition(settings, partition_of(steps_pk, PARTITIONS))]
    assert any(line.get("invocation_id") == steps_id and line.get("outcome") == "Ended" for line in replayed)
