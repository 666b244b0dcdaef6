"""The partition's state: an in-memory view of its slice of the compacted changelog.

As in Kafka Streams, the changelog is the store; this is only a materialised view of it. Every
change goes through `Transaction`, which records the changelog writes the processor produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import changelog
from schemas.records import InvocationStatus, JournalEntry


@dataclass
class PartitionStore:
    partition: int
    statuses: dict[str, InvocationStatus] = field(default_factory=dict)
    journals: dict[str, list[JournalEntry]] = field(default_factory=dict)

    def status(self, invocation_id: str) -> InvocationStatus | None:
        return self.statuses.get(invocation_id)

    def journal(self, invocation_id: str) -> list[JournalEntry]:
        return self.journals.get(invocation_id, [])

    def restore(self, key: str, value: bytes | None) -> None:
        """Apply one changelog record read while rebuilding the partition."""
        k = changelog.parse_key(key)
        if k.kind == changelog.STATUS:
            if value is None:
                self.statuses.pop(k.invocation_id, None)
            else:
                self.statuses[k.invocation_id] = InvocationStatus.decode(value)
            return
        entries = self.journals.setdefault(k.invocation_id, [])
        assert k.index is not None
        if value is None:
            del entries[k.index :]
            if not entries:
                self.journals.pop(k.invocation_id, None)
            return
        entry = JournalEntry.decode(value)
        if k.index == len(entries):
            entries.append(entry)
        elif k.index < len(entries):
            entries[k.index] = entry
        else:  # compaction never drops a live journal entry, so a gap is a bug worth hearing about
            raise ValueError(f"journal gap for {k.invocation_id}: index {k.index} after {len(entries)}")


@dataclass
class Transaction:
    """The writes of one state-machine step; applied to the store and mirrored to the changelog."""

    store: PartitionStore
    writes: list[tuple[str, bytes | None]] = field(default_factory=list)

    def put_status(self, status: InvocationStatus) -> None:
        self.store.statuses[status.invocation_id] = status
        self.writes.append((changelog.status_key(status.invocation_id), status.encode()))

    def append_journal(self, entry: JournalEntry) -> None:
        entries = self.store.journals.setdefault(entry.invocation_id, [])
        if entry.index != len(entries):
            raise ValueError(f"journal append at {entry.index} but length is {len(entries)}")
        entries.append(entry)
        self.writes.append((changelog.journal_key(entry.invocation_id, entry.index), entry.encode()))
