"""Restate's identifier formats: `inv_1…`, `dp_1…`, `sub_1…`, awakeable `sign_1…`.

Numbers are base62-encoded (alphabet 0-9a-zA-Z) after a byte swap: Restate encodes `n.to_be()`
on a little-endian machine, i.e. the big-endian bytes of `n` read as a little-endian integer.
A u64 takes 11 characters, a u128 22. The `1` after the prefix is the id-scheme version.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Self

import xxhash

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
U64_CHARS = 11
U128_CHARS = 22


class InvalidId(ValueError):
    """A string that is not an id of the expected kind; the message says why."""


def _encode(n: int, width_bytes: int, chars: int) -> str:
    v = int.from_bytes(n.to_bytes(width_bytes, "big"), "little")
    out = []
    while v:
        v, r = divmod(v, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out)).rjust(chars, "0")


def _decode(s: str, width_bytes: int) -> int:
    v = 0
    for c in s:
        digit = _INDEX.get(c)
        if digit is None:
            raise InvalidId(f"bad base62 character '{c}'")
        v = v * 62 + digit
    if v >= 1 << (8 * width_bytes):
        raise InvalidId("number out of range")
    return int.from_bytes(v.to_bytes(width_bytes, "little"), "big")


def ulid(now_ms: int, rand: int) -> int:
    """A ULID as u128: 48-bit millisecond timestamp, 80 random bits (both given: ids stay pure)."""
    return ((now_ms & ((1 << 48) - 1)) << 80) | (rand & ((1 << 80) - 1))


def partition_key_of(key: str) -> int:
    """Partition key of a virtual object / workflow key: xxh3-64 of its UTF-8 bytes (our choice;
    SDKs treat ids as opaque, so bit-exactness with Restate's hashing is not needed)."""
    return xxhash.xxh3_64_intdigest(key.encode())


def _sha256_uuid(*parts: str) -> tuple[int, bytes]:
    digest = hashlib.sha256(",".join(parts).encode()).digest()
    return int.from_bytes(digest[:16], "big"), digest


@dataclass(frozen=True, order=True)
class InvocationId:
    partition_key: int
    uuid: int

    PREFIX: ClassVar[str] = "inv_"

    def to_bytes(self) -> bytes:
        return self.partition_key.to_bytes(8, "big") + self.uuid.to_bytes(16, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        if len(raw) != 24:
            raise InvalidId(f"raw invocation id must be 24 bytes, got {len(raw)}")
        return cls(int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big"))

    def __str__(self) -> str:
        return (
            f"{self.PREFIX}1{_encode(self.partition_key, 8, U64_CHARS)}{_encode(self.uuid, 16, U128_CHARS)}"
        )

    @classmethod
    def parse(cls, s: str) -> Self:
        """Restate's wording: `bad invocation id '…': bad format` / `…: base62 decode error`.
        Memoized (ids are immutable; the processor parses an invocation's id at every command,
        and base62 in Python costs a few µs); errors are not cached."""
        return cls(*_parse_invocation_id(s))

    @property
    def timestamp_ms(self) -> int:
        return self.uuid >> 80

    @classmethod
    def generate(cls, partition_key: int, now_ms: int, rand: int) -> Self:
        return cls(partition_key, ulid(now_ms, rand))

    @classmethod
    def for_workflow(cls, service: str, key: str) -> Self:
        """A workflow runs once per key: its id is a function of (service, key)."""
        uuid, _ = _sha256_uuid("wf", service, key)
        return cls(partition_key_of(key), uuid)

    @classmethod
    def for_idempotent_request(
        cls, service: str, key: str | None, handler: str, idempotency_key: str
    ) -> Self:
        """Same (service, key, handler, idempotency key) → same invocation. Unkeyed requests take
        their partition key from bytes 16..24 of the same digest."""
        parts = ["ik", service] + ([key] if key is not None else []) + [handler, idempotency_key]
        uuid, digest = _sha256_uuid(*parts)
        pk = partition_key_of(key) if key is not None else int.from_bytes(digest[16:24], "big")
        return cls(pk, uuid)

    @classmethod
    def child(cls, parent: InvocationId, journal_index: int, partition_key: int) -> Self:
        """A call's invocation id, derived (not random) so that replaying the log gives the same id."""
        digest = hashlib.sha256(parent.to_bytes() + journal_index.to_bytes(4, "big")).digest()
        # Keep a ULID-like shape: the parent's timestamp in the top 48 bits.
        rand = int.from_bytes(digest[:10], "big")
        return cls(partition_key, ulid(parent.timestamp_ms, rand))


@lru_cache(maxsize=8192)
def _parse_invocation_id(s: str) -> tuple[int, int]:
    """(partition key, uuid) of an `inv_…` id."""
    prefix = InvocationId.PREFIX
    body = s[len(prefix) + 1 :]
    if not s.startswith(prefix + "1") or len(body) != U64_CHARS + U128_CHARS:
        raise InvalidId(f"bad invocation id '{s}': bad format")
    try:
        return _decode(body[:U64_CHARS], 8), _decode(body[U64_CHARS:], 16)
    except InvalidId:
        raise InvalidId(f"bad invocation id '{s}': base62 decode error") from None


@dataclass(frozen=True, order=True)
class _UlidId:
    uuid: int
    PREFIX: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    def __str__(self) -> str:
        return f"{self.PREFIX}1{_encode(self.uuid, 16, U128_CHARS)}"

    @classmethod
    def parse(cls, s: str) -> Self:
        if not s.startswith(cls.PREFIX + "1") or len(s) != len(cls.PREFIX) + 1 + U128_CHARS:
            raise InvalidId(f"bad {cls.KIND} id '{s}'")
        try:
            return cls(_decode(s[len(cls.PREFIX) + 1 :], 16))
        except InvalidId as e:
            raise InvalidId(f"bad {cls.KIND} id '{s}': {e}") from None

    @classmethod
    def generate(cls, now_ms: int, rand: int) -> Self:
        return cls(ulid(now_ms, rand))

    @property
    def timestamp_ms(self) -> int:
        return self.uuid >> 80


class DeploymentId(_UlidId):
    PREFIX: ClassVar[str] = "dp_"
    KIND: ClassVar[str] = "deployment"


class SubscriptionId(_UlidId):
    PREFIX: ClassVar[str] = "sub_"
    KIND: ClassVar[str] = "subscription"


def awakeable_id(invocation_id_raw: bytes, signal_index: int) -> str:
    payload = invocation_id_raw + signal_index.to_bytes(4, "big")
    return "sign_1" + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def parse_awakeable_id(s: str) -> tuple[InvocationId, int]:
    """`sign_1…` (invocation id ‖ signal index) or legacy `prom_1…` (id ‖ journal entry index)."""
    for prefix in ("sign_1", "prom_1"):
        if s.startswith(prefix):
            body = s[len(prefix) :]
            try:
                raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            except ValueError as e:
                raise InvalidId(f"bad awakeable id '{s}': {e}") from None
            if len(raw) != 28:
                raise InvalidId(f"bad awakeable id '{s}': wrong length")
            return InvocationId.from_bytes(raw[:24]), int.from_bytes(raw[24:], "big")
    raise InvalidId(f"bad awakeable id '{s}': expected prefix 'sign_1' or 'prom_1'")
