"""The partition's state: an in-memory view of its slice of the compacted changelog.

As in Kafka Streams, the changelog is the store; this is only a materialised view of it. Every
change goes through `Transaction`, which records the changelog writes the processor produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import changelog
from schemas.records import InvocationStatus, JournalEntry, ObjectStatus, Promise, StateEntry, Timer

ObjectId = tuple[str, str]  # (service, key)


@dataclass
class PartitionStore:
    partition: int
    statuses: dict[str, InvocationStatus] = field(default_factory=dict)
    journals: dict[str, list[JournalEntry]] = field(default_factory=dict)
    objects: dict[ObjectId, ObjectStatus] = field(default_factory=dict)
    state: dict[ObjectId, dict[bytes, bytes]] = field(default_factory=dict)
    timers: dict[tuple[str, int], Timer] = field(default_factory=dict)  # (invocation id, completion id)
    promises: dict[tuple[str, str, str], Promise] = field(default_factory=dict)  # (service, key, name)

    def status(self, invocation_id: str) -> InvocationStatus | None:
        return self.statuses.get(invocation_id)

    def journal(self, invocation_id: str) -> list[JournalEntry]:
        return self.journals.get(invocation_id, [])

    def object(self, service: str, key: str) -> ObjectStatus:
        return self.objects.get((service, key)) or ObjectStatus(service=service, key=key)

    def state_of(self, service: str, key: str) -> dict[bytes, bytes]:
        return dict(self.state.get((service, key), {}))

    def restore(self, key: str, value: bytes | None) -> None:
        """Apply one changelog record read while rebuilding the partition."""
        k = changelog.parse_key(key)
        if k.kind == changelog.STATUS:
            if value is None:
                self.statuses.pop(k.invocation_id, None)
            else:
                self.statuses[k.invocation_id] = InvocationStatus.decode(value)
        elif k.kind == changelog.JOURNAL:
            self._restore_journal(k, value)
        elif k.kind == changelog.TIMER:
            assert k.index is not None
            if value is None:
                self.timers.pop((k.invocation_id, k.index), None)
            else:
                self.timers[(k.invocation_id, k.index)] = Timer.decode(value)
        elif k.kind == changelog.PROMISE:
            ident = (k.service, k.key, k.state_key.decode())
            if value is None:
                self.promises.pop(ident, None)
            else:
                self.promises[ident] = Promise.decode(value)
        elif k.kind == changelog.OBJECT:
            if value is None:
                self.objects.pop((k.service, k.key), None)
            else:
                self.objects[(k.service, k.key)] = ObjectStatus.decode(value)
        else:
            entries = self.state.setdefault((k.service, k.key), {})
            if value is None:
                entries.pop(k.state_key, None)
            else:
                entries[k.state_key] = StateEntry.decode(value).value
            if not entries:
                del self.state[(k.service, k.key)]

    def _restore_journal(self, k: changelog.ChangelogKey, value: bytes | None) -> None:
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

    def purge_invocation(self, invocation_id: str) -> None:
        """Forget an invocation: tombstones for its status and every journal entry."""
        self.store.statuses.pop(invocation_id, None)
        self.writes.append((changelog.status_key(invocation_id), None))
        for entry in self.store.journals.pop(invocation_id, []):
            self.writes.append((changelog.journal_key(invocation_id, entry.index), None))

    def append_journal(self, entry: JournalEntry) -> None:
        entries = self.store.journals.setdefault(entry.invocation_id, [])
        if entry.index != len(entries):
            raise ValueError(f"journal append at {entry.index} but length is {len(entries)}")
        entries.append(entry)
        self.writes.append((changelog.journal_key(entry.invocation_id, entry.index), entry.encode()))

    def put_timer(self, timer: Timer) -> None:
        self.store.timers[(timer.invocation_id, timer.completion_id)] = timer
        key = changelog.timer_key(timer.wake_up_at_ms, timer.invocation_id, timer.completion_id)
        self.writes.append((key, timer.encode()))

    def delete_timer(self, timer: Timer) -> None:
        self.store.timers.pop((timer.invocation_id, timer.completion_id), None)
        self.writes.append(
            (changelog.timer_key(timer.wake_up_at_ms, timer.invocation_id, timer.completion_id), None)
        )

    def put_promise(self, promise: Promise) -> None:
        self.store.promises[(promise.service, promise.key, promise.name)] = promise
        self.writes.append(
            (changelog.promise_key(promise.service, promise.key, promise.name), promise.encode())
        )

    def put_object(self, obj: ObjectStatus) -> None:
        """An unlocked object with an empty inbox is deleted (a tombstone), not stored."""
        key = changelog.object_key(obj.service, obj.key)
        if obj.locked_by is None and not obj.inbox:
            self.store.objects.pop((obj.service, obj.key), None)
            self.writes.append((key, None))
        else:
            self.store.objects[(obj.service, obj.key)] = obj
            self.writes.append((key, obj.encode()))

    def set_state(self, service: str, key: str, name: bytes, value: bytes) -> None:
        self.store.state.setdefault((service, key), {})[name] = value
        entry = StateEntry(service=service, key=key, state_key=name, value=value)
        self.writes.append((changelog.state_key(service, key, name), entry.encode()))

    def clear_state(self, service: str, key: str, name: bytes) -> None:
        entries = self.store.state.get((service, key), {})
        if entries.pop(name, None) is not None:
            self.writes.append((changelog.state_key(service, key, name), None))
        if not entries:
            self.store.state.pop((service, key), None)

    def clear_all_state(self, service: str, key: str) -> None:
        for name in list(self.store.state.get((service, key), {})):
            self.clear_state(service, key, name)
