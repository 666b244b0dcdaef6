"""Where the admin API keeps the registry: the `metadata` topic in production, memory in unit tests."""

from __future__ import annotations

from typing import Protocol

from schemas.registry import Registry, apply_record


class RegistryStore(Protocol):
    def snapshot(self) -> Registry: ...

    async def write(self, records: list[tuple[str, bytes | None]]) -> None:
        """Append records; returns once `snapshot()` reflects them."""
        ...


class MemoryRegistryStore:
    """Applies records through the same Avro path as the Kafka-backed store."""

    def __init__(self) -> None:
        self._registry = Registry()
        self.log: list[tuple[str, bytes | None]] = []

    def snapshot(self) -> Registry:
        return self._registry

    async def write(self, records: list[tuple[str, bytes | None]]) -> None:
        for key, value in records:
            self.log.append((key, value))
            apply_record(self._registry, key, value)
