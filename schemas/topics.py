"""Topic names and configurations (DESIGN.md, "The log and the state")."""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def changelog(self) -> str:
        return f"{self.prefix}.changelog"

    @property
    def results(self) -> str:
        return f"{self.prefix}.results"

    @property
    def metadata(self) -> str:
        return f"{self.prefix}.metadata"

    @property
    def commands_dlq(self) -> str:
        return f"{self.prefix}.commands.dlq"

    def specs(
        self, partitions: int, results_partitions: int = 4, delete_retention_ms: int = DAY_MS
    ) -> list[TopicSpec]:
        """`changelog` is co-partitioned with `commands`: same count, same partition per record."""
        return [
            TopicSpec(
                self.commands, partitions, {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}
            ),
            TopicSpec(
                self.changelog,
                partitions,
                {"cleanup.policy": "compact", "delete.retention.ms": str(delete_retention_ms)},
            ),
            TopicSpec(
                self.results, results_partitions, {"cleanup.policy": "delete", "retention.ms": str(DAY_MS)}
            ),
            TopicSpec(self.metadata, 1, {"cleanup.policy": "compact"}),
            TopicSpec(self.commands_dlq, 1, {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}),
        ]
