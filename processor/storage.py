"""The partition's state as the state machine sees it: a view of its slice of the changelog.

As in Kafka Streams, the changelog is the store; this is a materialised copy of it, kept in a
`ChangelogStore` (SQLite: on disk and checkpointed for a processor, in memory for replay and
tests), with decoded records cached for the invocations being worked on. Every change goes
through `put()` — both the state machine's writes (via `Transaction`) and records restored from
the changelog — so the two paths cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kafka_core.changelog_records import ChangelogRecords
from kafka_core.changelog_store import ChangelogStore
from schemas import changelog, codec
from schemas.records import (
    Failure,
    InvocationPhase,
    InvocationStatus,
    JournalEntry,
    ObjectStatus,
    Promise,
    StateEntry,
    Success,
    Timer,
)

# Restate's `sys_invocation.status` of each phase (an invoked invocation waiting for a retry is
# `backing-off`: see `PartitionStore.invocation_counts`).
STATUS_OF_PHASE = {
    InvocationPhase.SCHEDULED: "scheduled",
    InvocationPhase.INBOXED: "pending",
    InvocationPhase.INVOKED: "running",
    InvocationPhase.SUSPENDED: "suspended",
    InvocationPhase.PAUSED: "paused",
    InvocationPhase.COMPLETED: "completed",
}
DERIVED_LAYOUT = "2"  # 2: invocation_phases and invocation_counts beside invoked


class _PhaseRow(NamedTuple):
    """An invocation's row in `invocation_phases`."""

    phase: str
    service: str
    handler: str
    retry_at: int | None  # an invoked invocation's next retry time, while it has one

    @classmethod
    def of(
        cls, phase: str, service: str, handler: str, status: InvocationStatus | dict[str, Any]
    ) -> _PhaseRow:
        retry = (
            status.next_retry_at_ms if isinstance(status, InvocationStatus) else status["next_retry_at_ms"]
        )
        return cls(str(phase), service, handler, retry if phase == InvocationPhase.INVOKED else None)


class PhaseChange(NamedTuple):
    """An invocation entered `phase` (a new invocation enters its first one)."""

    phase: str
    service: str
    handler: str
    invocation_id: str
    created_at_ms: int
    failure: str | None  # a completed invocation's failure message


Decoded = InvocationStatus | JournalEntry | None  # a written record's model, when the writer has it
_CACHE_LIMIT = 20_000  # decoded invocations kept; the rest is read from the store when needed
# Payload bytes (journal frames, results) the decoded copies may hold before they are dropped at
# the next commit: with bodies up to 32 MiB, a count alone would let a few hundred invocations
# keep gigabytes that are on disk anyway.
CACHE_PAYLOAD_BYTES = 64 * 1024 * 1024


def _payload_bytes(value: InvocationStatus | list[JournalEntry] | None) -> int:
    """The large parts of a cached value (approximate: the rest is small and bounded)."""
    if isinstance(value, InvocationStatus):
        result = value.result
        return len(result.value) if isinstance(result, Success) else 0
    return sum(len(e.frame) for e in value) if value else 0


class PartitionStore(ChangelogRecords):
    def __init__(self, partition: int, kv: ChangelogStore | None = None) -> None:
        super().__init__(kv if kv is not None else ChangelogStore())
        self.partition = partition
        self._derived_tables()
        self._statuses: dict[str, InvocationStatus | None] = {}
        self._journals: dict[str, list[JournalEntry]] = {}
        self._cached_payload = 0  # grows as copies are cached (never less than they hold)
        # Phase changes written since the last commit or rollback, for the processor's metrics
        # (the state machine mutates statuses in place, so the old phase is read from the store);
        # off unless asked for (replay and tests need no counts).
        self.track_transitions = False
        self.transitions: list[PhaseChange] = []
        # Set when a status write changed the counts `invocation_counts` reports (the processor
        # publishes them after a commit only then).
        self.counts_changed = True
        self.backing_off = False  # some invocation waited for a retry at the last count

    def _derived_tables(self) -> None:
        """Tables derived from status records, kept in the store's transactions (so a rollback,
        a checkpoint and a restore treat them as the records themselves): `invoked` lets
        recovery find running invocations without decoding every status; `invocation_phases`
        (each invocation's phase, target and retry time) and `invocation_counts` (how many per
        phase and target) keep the counts of `invocation_counts()` up to date at each write, so
        no commit scans the invocations. A store written before these tables existed is wiped
        (restored from the changelog): it is a cache."""
        db = self.kv.db
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS invoked (invocation_id TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS invocation_phases (
                invocation_id TEXT PRIMARY KEY, phase TEXT NOT NULL, service TEXT NOT NULL,
                handler TEXT NOT NULL, retry_at INTEGER) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS invocation_phases_retry ON invocation_phases (retry_at)
                WHERE retry_at IS NOT NULL;
            CREATE TABLE IF NOT EXISTS invocation_counts (
                phase TEXT NOT NULL, service TEXT NOT NULL, handler TEXT NOT NULL, n INTEGER NOT NULL,
                PRIMARY KEY (phase, service, handler)) WITHOUT ROWID;
            """
        )
        layout = db.execute("SELECT value FROM meta WHERE name = 'partition_store'").fetchone()
        if layout is None or layout[0] != DERIVED_LAYOUT:
            self.kv.wipe()
            db.execute("INSERT OR REPLACE INTO meta VALUES ('partition_store', ?)", (DERIVED_LAYOUT,))

    # -- reads ----------------------------------------------------------------------------------

    def status(self, invocation_id: str) -> InvocationStatus | None:
        if invocation_id in self._statuses:
            return self._statuses[invocation_id]
        raw = self.kv.get(changelog.status_key(invocation_id))
        status = None if raw is None else InvocationStatus.decode(raw)
        self._cache(self._statuses, invocation_id, status)
        return status

    def journal(self, invocation_id: str) -> list[JournalEntry]:
        """The invocation's journal (the cached list itself: read-only for callers)."""
        entries = self._journals.get(invocation_id)
        if entries is None:
            prefix = changelog.journal_key(invocation_id, 0)[: -len("0000000000")]
            entries = [JournalEntry.decode(v) for _, v in self.kv.scan(prefix)]
            self._cache(self._journals, invocation_id, entries)
        return entries

    def object(self, service: str, key: str) -> ObjectStatus:
        raw = self.kv.get(changelog.object_key(service, key))
        return ObjectStatus.decode(raw) if raw is not None else ObjectStatus(service=service, key=key)

    def state_value(self, service: str, key: str, name: bytes, scope: str | None = None) -> bytes | None:
        raw = self.kv.get(changelog.state_key(service, key, name, scope))
        return None if raw is None else StateEntry.decode(raw).value

    def state_of(self, service: str, key: str, scope: str | None = None) -> dict[bytes, bytes]:
        prefix = changelog.state_key(service, key, b"", scope)
        return {(e := StateEntry.decode(v)).state_key: e.value for _, v in self.kv.scan(prefix)}

    def promises_of(self, service: str, key: str) -> list[Promise]:
        prefix = changelog.promise_key(service, key, "x")[:-1]
        return [Promise.decode(v) for _, v in self.kv.scan(prefix)]

    def promise(self, service: str, key: str, name: str) -> Promise | None:
        raw = self.kv.get(changelog.promise_key(service, key, name))
        return None if raw is None else Promise.decode(raw)

    def timer(self, wake_up_at_ms: int, invocation_id: str, completion_id: int) -> Timer | None:
        raw = self.kv.get(changelog.timer_key(wake_up_at_ms, invocation_id, completion_id))
        return None if raw is None else Timer.decode(raw)

    def invoked(self) -> list[str]:
        """Invocations whose attempts were running: a new owner restarts them."""
        return [r[0] for r in self.kv.db.execute("SELECT invocation_id FROM invoked ORDER BY invocation_id")]

    # -- writes ---------------------------------------------------------------------------------

    def put(self, key: str, value: bytes | None, decoded: Decoded = None) -> None:
        """Apply one changelog record (restored, or written by the state machine)."""
        self.kv.put(key, value)
        kind = key.split("/", 1)[0]
        if kind == changelog.STATUS:
            invocation_id = key[len(changelog.STATUS) + 1 :]
            row: _PhaseRow | None
            if isinstance(decoded, InvocationStatus):
                self._cache(self._statuses, invocation_id, decoded)
                row = _PhaseRow.of(decoded.phase, decoded.target.service, decoded.target.handler, decoded)
            elif value is None:
                self._statuses.pop(invocation_id, None)
                row = None
            else:
                # Restoring: only the phase, target and retry time matter now (building the model
                # costs more than reading the record); the status is decoded when asked for.
                self._statuses.pop(invocation_id, None)
                d = codec.decode(InvocationStatus.avro_name, value)
                row = _PhaseRow.of(d["phase"], d["target"]["service"], d["target"]["handler"], d)
            self._index_status(invocation_id, row, decoded)
        elif kind == changelog.JOURNAL:
            k = changelog.parse_key(key)
            entries = self._journals.get(k.invocation_id)
            if entries is None:
                return
            assert k.index is not None
            if value is None:
                del entries[k.index :]
                return
            entry = decoded if isinstance(decoded, JournalEntry) else JournalEntry.decode(value)
            self._cached_payload += len(entry.frame)
            if k.index == len(entries):
                entries.append(entry)
            elif k.index < len(entries):
                entries[k.index] = entry
            else:  # compaction never drops a live journal entry, so a gap is a bug worth hearing about
                raise ValueError(f"journal gap for {k.invocation_id}: index {k.index} after {len(entries)}")

    restore = put

    def _index_status(self, invocation_id: str, row: _PhaseRow | None, decoded: Decoded) -> None:
        """Keep the derived tables in step with a status write (`row` None: a tombstone)."""
        db = self.kv.db
        found = db.execute(
            "SELECT phase, service, handler, retry_at FROM invocation_phases WHERE invocation_id = ?",
            (invocation_id,),
        ).fetchone()
        old = None if found is None else _PhaseRow(*found)
        if old == row:
            return
        self.counts_changed = True
        if row is None:
            db.execute("DELETE FROM invocation_phases WHERE invocation_id = ?", (invocation_id,))
        else:
            db.execute(
                "INSERT OR REPLACE INTO invocation_phases VALUES (?, ?, ?, ?, ?)", (invocation_id, *row)
            )
        if old is not None and row is not None and old[:3] == row[:3]:
            return  # only the retry time moved
        if old is not None:
            db.execute(
                "UPDATE invocation_counts SET n = n - 1 WHERE phase = ? AND service = ? AND handler = ?",
                old[:3],
            )
        if row is not None:
            db.execute(
                "INSERT INTO invocation_counts VALUES (?, ?, ?, 1) "
                "ON CONFLICT (phase, service, handler) DO UPDATE SET n = n + 1",
                row[:3],
            )
        was_invoked = old is not None and old.phase == InvocationPhase.INVOKED
        is_invoked = row is not None and row.phase == InvocationPhase.INVOKED
        if is_invoked and not was_invoked:
            db.execute("INSERT OR IGNORE INTO invoked VALUES (?)", (invocation_id,))
        elif was_invoked and not is_invoked:
            db.execute("DELETE FROM invoked WHERE invocation_id = ?", (invocation_id,))
        if (
            self.track_transitions
            and isinstance(decoded, InvocationStatus)
            and (old is None or old.phase != decoded.phase)
        ):
            result = decoded.result
            self.transitions.append(
                PhaseChange(
                    decoded.phase,
                    decoded.target.service,
                    decoded.target.handler,
                    decoded.invocation_id,
                    decoded.created_at_ms,
                    result.message if isinstance(result, Failure) else None,
                )
            )

    def invocation_counts(self, now_ms: int) -> dict[tuple[str, str, str], int]:
        """How many of the partition's invocations are in each status (Restate's
        `sys_invocation.status`: scheduled, pending, running, backing-off, suspended, paused,
        completed) per target, as (status, service, handler) → count. Read from the counts kept
        at each write; only invocations waiting for a retry are looked at one by one (an invoked
        invocation is backing off until its retry is due, as the admin's SQL tells it)."""
        db = self.kv.db
        counts: dict[tuple[str, str, str], int] = {}
        for phase, service, handler, n in db.execute(
            "SELECT phase, service, handler, n FROM invocation_counts"
        ):
            status = STATUS_OF_PHASE[phase]
            counts[(status, service, handler)] = n
            if status == "running":
                counts.setdefault(("backing-off", service, handler), 0)
        backing_off = db.execute(
            "SELECT service, handler, count(*) FROM invocation_phases WHERE retry_at > ? "
            "GROUP BY service, handler",
            (now_ms,),
        ).fetchall()
        for service, handler, n in backing_off:
            counts[("running", service, handler)] -= n
            counts[("backing-off", service, handler)] = n
        self.backing_off = bool(backing_off)
        self.counts_changed = False
        return counts

    def take_transitions(self) -> list[PhaseChange]:
        """The phase changes of the committed batch (the caller's to count)."""
        out, self.transitions = self.transitions, []
        return out

    def drop_caches(self) -> None:
        """After a rollback: the decoded copies may hold writes that were never committed."""
        self._statuses.clear()
        self._journals.clear()
        self._cached_payload = 0
        self.transitions.clear()

    def trim_caches(self) -> None:
        """After a commit (no step holds a decoded copy then): drop the copies once their payloads
        pass `CACHE_PAYLOAD_BYTES`, so large bodies do not pile up in memory."""
        if self._cached_payload > CACHE_PAYLOAD_BYTES:
            self._statuses.clear()
            self._journals.clear()
            self._cached_payload = 0

    def _cache(self, table: dict[str, Any], key: str, value: Any) -> None:
        if len(table) >= _CACHE_LIMIT and key not in table:
            table.clear()
        table[key] = value
        self._cached_payload += _payload_bytes(value)


@dataclass
class Transaction:
    """The writes of one state-machine step; applied to the store and mirrored to the changelog."""

    store: PartitionStore
    writes: list[tuple[str, bytes | None]] = field(default_factory=list)

    def _write(self, key: str, value: bytes | None, decoded: Decoded = None) -> None:
        self.store.put(key, value, decoded)
        self.writes.append((key, value))

    def put_status(self, status: InvocationStatus) -> None:
        self._write(changelog.status_key(status.invocation_id), status.encode(), status)

    def purge_invocation(self, invocation_id: str) -> None:
        """Forget an invocation: tombstones for its status and every journal entry."""
        entries = list(self.store.journal(invocation_id))
        self._write(changelog.status_key(invocation_id), None)
        for entry in entries:
            self._write(changelog.journal_key(invocation_id, entry.index), None)

    def purge_journal(self, invocation_id: str) -> None:
        """Tombstones for every journal entry; the status stays."""
        for entry in list(self.store.journal(invocation_id)):
            self._write(changelog.journal_key(invocation_id, entry.index), None)

    def clear_promises(self, service: str, key: str) -> None:
        for promise in self.store.promises_of(service, key):
            self._write(changelog.promise_key(service, key, promise.name), None)

    def append_journal(self, entry: JournalEntry) -> None:
        length = len(self.store.journal(entry.invocation_id))
        if entry.index != length:
            raise ValueError(f"journal append at {entry.index} but length is {length}")
        self._write(changelog.journal_key(entry.invocation_id, entry.index), entry.encode(), entry)

    def put_timer(self, timer: Timer) -> None:
        key = changelog.timer_key(timer.wake_up_at_ms, timer.invocation_id, timer.completion_id)
        self._write(key, timer.encode())

    def delete_timer(self, timer: Timer) -> None:
        self._write(changelog.timer_key(timer.wake_up_at_ms, timer.invocation_id, timer.completion_id), None)

    def put_promise(self, promise: Promise) -> None:
        self._write(changelog.promise_key(promise.service, promise.key, promise.name), promise.encode())

    def put_object(self, obj: ObjectStatus) -> None:
        """An unlocked object with an empty inbox and no queued state edit is deleted (a
        tombstone), not stored."""
        key = changelog.object_key(obj.service, obj.key)
        if obj.locked_by is None and not obj.inbox and not obj.pending_state:
            self._write(key, None)
        else:
            self._write(key, obj.encode())

    def set_state(self, service: str, key: str, name: bytes, value: bytes, scope: str | None = None) -> None:
        entry = StateEntry(service=service, key=key, state_key=name, value=value, scope=scope)
        self._write(changelog.state_key(service, key, name, scope), entry.encode())

    def clear_state(self, service: str, key: str, name: bytes, scope: str | None = None) -> None:
        if self.store.state_value(service, key, name, scope) is not None:
            self._write(changelog.state_key(service, key, name, scope), None)

    def clear_all_state(self, service: str, key: str) -> None:
        for name in sorted(self.store.state_of(service, key)):
            self.clear_state(service, key, name)
