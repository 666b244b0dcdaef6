"""murmur2 as Kafka's Java client computes it (vectors from Kafka's own UtilsTest)."""

from __future__ import annotations

import pytest

from schemas.ids import InvocationId
from schemas.partitioner import murmur2, partition_for_key, partition_of, routing_key, to_positive


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(key: str, expected: int) -> None:
    assert murmur2(key.encode()) == expected


def test_partition_is_positive_modulo() -> None:
    assert partition_for_key(b"foobar", 7) == to_positive(-790332482) % 7


def test_an_invocation_routes_by_its_id_alone() -> None:
    inv = InvocationId.generate(123456789, 1_700_000_000_000, 1)
    parsed = InvocationId.parse(str(inv))
    assert routing_key(parsed.partition_key) == (123456789).to_bytes(8, "big")
    assert partition_of(parsed.partition_key, 8) == partition_for_key(routing_key(123456789), 8)
