"""Our partitioner agrees with librdkafka's `murmur2_random` on records produced to a real broker."""

from __future__ import annotations

import random

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.partitioner import partition_for_key, routing_key

pytestmark = pytest.mark.integration


def test_partitions_match_librdkafka(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.partitioner"
    partitions = 7
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(15)
    rng = random.Random(7)
    keys = [f"key-{i}".encode() for i in range(100)]
    keys += [routing_key(rng.getrandbits(64)) for _ in range(100)]
    keys += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40))) for _ in range(50)]
    delivered: dict[bytes, int] = {}

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        delivered[msg.key()] = msg.partition()  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    for key in keys:
        producer.produce(topic, key=key, value=b"x", on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert len(delivered) == len(set(keys))
    mismatches = {
        k: (p, partition_for_key(k, partitions))
        for k, p in delivered.items()
        if p != partition_for_key(k, partitions)
    }
    assert mismatches == {}
    assert len(set(delivered.values())) == partitions  # the keys really spread
