"""Kafka subscriptions end to end: records of a user topic invoke a virtual object handler."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.test_walking_skeleton import cluster  # noqa: F401 - the shared fixture
from tests.support.processes import Component
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration


def test_subscription_invokes_an_object_per_record(
    cluster: dict[str, Component],  # noqa: F811
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    admin = f"http://127.0.0.1:{cluster['admin'].port}"
    ingress = f"http://127.0.0.1:{cluster['ingress'].port}"
    topic = f"{topic_prefix}.orders"
    kafka_admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    kafka_admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)
    with run_sdk_deployment() as uri, httpx.Client(timeout=30) as client:
        assert client.post(f"{admin}/deployments", json={"uri": uri}).status_code == 201
        created = client.post(
            f"{admin}/kafka-clusters",
            json={"name": "local", "properties": {"bootstrap.servers": kafka_bootstrap}},
        )
        assert created.status_code == 201, created.text
        missing = client.post(
            f"{admin}/subscriptions", json={"source": "kafka://nope/x", "sink": "service://Counter/add"}
        )
        assert missing.status_code == 400 and "nope" in missing.json()["message"]
        sub = client.post(
            f"{admin}/subscriptions",
            json={
                "source": f"kafka://local/{topic}",
                "sink": "service://Counter/add",
                "options": {"auto.offset.reset": "earliest"},
            },
        )
        assert sub.status_code == 201, sub.text
        sub_id = sub.json()["id"]
        assert sub_id.startswith("sub_1") and sub.json()["options"]["group.id"] == sub_id
        listed = client.get(f"{admin}/subscriptions", params={"sink": "service://Counter/add"}).json()
        assert [s["id"] for s in listed["subscriptions"]] == [sub_id]

        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for key, value in [("s1", 1), ("s1", 2), ("s2", 10), ("s1", 3)]:
            producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
        assert producer.flush(10) == 0

        deadline = time.monotonic() + 30
        while client.get(f"{ingress}/Counter/s1/get").json() != 6:
            assert time.monotonic() < deadline, client.get(f"{ingress}/Counter/s1/get").text
            time.sleep(0.2)
        assert client.get(f"{ingress}/Counter/s2/get").json() == 10
        rows = client.post(
            f"{admin}/query",
            json={
                "query": "SELECT target, invoked_by, invoked_by_subscription_id FROM sys_invocation "
                "WHERE invoked_by = 'subscription' ORDER BY target"
            },
            headers={"accept": "application/json"},
        ).json()["rows"]
        assert len(rows) == 4 and {r["invoked_by_subscription_id"] for r in rows} == {sub_id}

        assert client.delete(f"{admin}/subscriptions/{sub_id}").status_code == 202
        assert client.get(f"{admin}/subscriptions/{sub_id}").status_code == 404
