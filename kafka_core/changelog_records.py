"""Decoded reads over a local copy of the changelog: what the records under each key prefix are.

The processor's partition store and the admin API's introspection both read their copy through
this, so the meaning of a changelog key is written down once (next to `schemas.changelog`).
"""

from __future__ import annotations

from kafka_core.changelog_store import ChangelogStore
from schemas import changelog
from schemas.records import InvocationStatus, JournalEntry, ObjectStatus, Promise, StateEntry, Timer

ObjectId = tuple[str, str]  # (service, key)


class ChangelogRecords:
    def __init__(self, kv: ChangelogStore) -> None:
        self.kv = kv

    def status(self, invocation_id: str) -> InvocationStatus | None:
        raw = self.kv.get(changelog.status_key(invocation_id))
        return None if raw is None else InvocationStatus.decode(raw)

    def statuses(self) -> list[InvocationStatus]:
        return [InvocationStatus.decode(v) for _, v in self.kv.scan(f"{changelog.STATUS}/")]

    def journals(self) -> dict[str, list[JournalEntry]]:
        out: dict[str, list[JournalEntry]] = {}
        for _, v in self.kv.scan(f"{changelog.JOURNAL}/"):
            entry = JournalEntry.decode(v)
            out.setdefault(entry.invocation_id, []).append(entry)
        return out

    def timers_after(self, after_key: str | None, limit: int) -> list[tuple[str, Timer]]:
        """Pending timers in firing order, after the key `after_key`."""
        scan = self.kv.scan(f"{changelog.TIMER}/", after=after_key, limit=limit)
        return [(k, Timer.decode(v)) for k, v in scan]

    def timers(self) -> dict[tuple[str, int], Timer]:
        return {(t.invocation_id, t.completion_id): t for _, t in self.timers_after(None, -1)}

    def objects(self) -> dict[ObjectId, ObjectStatus]:
        decoded = (ObjectStatus.decode(v) for _, v in self.kv.scan(f"{changelog.OBJECT}/"))
        return {(o.service, o.key): o for o in decoded}

    def promises(self) -> list[Promise]:
        return [Promise.decode(v) for _, v in self.kv.scan(f"{changelog.PROMISE}/")]

    def state(self) -> dict[ObjectId, dict[bytes, bytes]]:
        out: dict[ObjectId, dict[bytes, bytes]] = {}
        for _, v in self.kv.scan(f"{changelog.STATE}/"):
            e = StateEntry.decode(v)
            out.setdefault((e.service, e.key), {})[e.state_key] = e.value
        return out
