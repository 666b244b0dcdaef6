"""Kafka's default partitioner, and kinvoke's routing rule for `commands`.

Routing: every record on `commands` is keyed by `routing_key(partition_key)`, the 8-byte
big-endian partition key that every `inv_…` id carries. Kafka's default partitioner
(`toPositive(murmur2(key)) % N`, librdkafka `murmur2_random`) then puts every command about one
invocation — and about one virtual object, whose partition key is derived from its key — on one
partition, and anyone can compute that partition from an invocation id alone.
"""

from __future__ import annotations

from functools import lru_cache

SEED = 0x9747B28C
M = 0x5BD1E995
MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`: MurmurHash2 32-bit, seed 0x9747b28c, as a signed Java int."""
    length = len(data)
    h = (SEED ^ length) & MASK32
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * M) & MASK32
        k ^= k >> 24
        k = (k * M) & MASK32
        h = (h * M) & MASK32
        h ^= k
    rest = length % 4
    tail = n4 * 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * M) & MASK32
    h ^= h >> 13
    h = (h * M) & MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    return n & 0x7FFFFFFF


def partition_for_key(key: bytes, num_partitions: int) -> int:
    return to_positive(murmur2(key)) % num_partitions


def routing_key(partition_key: int) -> bytes:
    return partition_key.to_bytes(8, "big")


@lru_cache(maxsize=8192)
def partition_of(partition_key: int, num_partitions: int) -> int:
    """Memoized: murmur2 in Python costs µs, and every command of an invocation asks again."""
    return partition_for_key(routing_key(partition_key), num_partitions)
