"""Tables kept up to date as the changelog arrives, so a query does not rebuild them.

`ChangelogView._apply` marks the changelog keys it applies (`LiveTables.mark`, cheap); before a
query reads one of these tables, `LiveTables.refresh` decodes only the records marked since the
last query (each at its latest value, once however often it changed) and updates their rows.
Rows sit in chunks of a few thousand keys, each with a cached Arrow record batch: a change
rebuilds only its chunk, so a query over 100k invocations hands DataFusion cached batches.

Kept here: `sys_invocation_status`, `sys_journal_events` (both from status records),
`sys_inbox` and `sys_keyed_service_status` (object records), and the invoked invocations
`sys_invocation_state` is made of at query time (its rows depend on the time: a retry that is due
is running). Journals, state and promises are read per query instead (`query.py`): queries
address them by invocation or object, and they are the bulk of the changelog.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from admin_api.introspection import rows
from admin_api.introspection.schema import TABLES
from kafka_core.changelog_records import ChangelogRecords
from schemas import changelog
from schemas.records import InvocationStatus, ObjectStatus

Row = rows.Row


@dataclass
class _Chunk:
    rows: dict[str, list[Row]] = field(default_factory=dict)
    batch: pa.RecordBatch | None = None


class KeyedTable:
    """A table whose rows belong to keys (0..n rows per key), as Arrow batches per chunk."""

    CHUNK_KEYS = 2048

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._chunks: list[_Chunk] = []
        self._where: dict[str, _Chunk] = {}
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def put(self, key: str, new: list[Row]) -> None:
        """Replace the rows of `key` (none: remove it)."""
        chunk = self._where.get(key)
        if chunk is None:
            if not new:
                return
            if not self._chunks or len(self._chunks[-1].rows) >= self.CHUNK_KEYS:
                self._chunks.append(_Chunk())
            chunk = self._chunks[-1]
            self._where[key] = chunk
        self._rows -= len(chunk.rows.get(key, ()))
        if new:
            chunk.rows[key] = new
            self._rows += len(new)
        else:
            del chunk.rows[key]
            del self._where[key]
        chunk.batch = None

    def clear(self) -> None:
        self._chunks, self._where, self._rows = [], {}, 0

    def batches(self) -> list[pa.RecordBatch]:
        """Current contents; only chunks changed since the last call are converted."""
        out = []
        for chunk in self._chunks:
            if not chunk.rows:
                continue
            if chunk.batch is None:
                chunk.batch = to_batch(self.schema, [r for rs in chunk.rows.values() for r in rs])
            out.append(chunk.batch)
        return out


def to_batch(schema: pa.Schema, table_rows: list[Row]) -> pa.RecordBatch:
    columns = list(zip(*table_rows, strict=True)) if table_rows else [()] * len(schema)
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class LiveTables:
    """The incrementally maintained tables (see the module docstring). Not thread-safe: `mark`
    and `refresh` run under the changelog view's lock."""

    PAGE = 5000

    def __init__(self) -> None:
        self.status = KeyedTable(TABLES["sys_invocation_status"])
        self.events = KeyedTable(TABLES["sys_journal_events"])
        self.inbox = KeyedTable(TABLES["sys_inbox"])
        self.keyed = KeyedTable(TABLES["sys_keyed_service_status"])
        self.invoked: dict[str, rows.Invoked] = {}
        self._dirty: set[str] = set()
        self._built = False

    def mark(self, key: str) -> None:
        """A changelog record was applied (before the first build everything is read anyway)."""
        if self._built and key.startswith((changelog.STATUS + "/", changelog.OBJECT + "/")):
            self._dirty.add(key)

    @property
    def pending(self) -> int:
        """Records to read at the next refresh (all of them before the first build)."""
        return len(self._dirty) if self._built else -1

    def refresh(self, store: ChangelogRecords) -> None:
        if not self._built:
            self._build(store)
            return
        dirty, self._dirty = self._dirty, set()
        for key in sorted(dirty):
            raw = store.kv.get(key)
            if key.startswith(changelog.STATUS + "/"):
                inv = key[len(changelog.STATUS) + 1 :]
                self._status(inv, None if raw is None else InvocationStatus.decode(raw))
            else:
                self._object(key, None if raw is None else ObjectStatus.decode(raw))

    def _build(self, store: ChangelogRecords) -> None:
        for table in (self.status, self.events, self.inbox, self.keyed):
            table.clear()
        self.invoked.clear()
        self._dirty.clear()
        for prefix in (changelog.STATUS + "/", changelog.OBJECT + "/"):
            after: str | None = None
            while True:
                page = list(store.kv.scan(prefix, after=after, limit=self.PAGE))
                for key, raw in page:
                    if prefix.startswith(changelog.STATUS):
                        self._status(key[len(prefix) :], InvocationStatus.decode(raw))
                    else:
                        self._object(key, ObjectStatus.decode(raw))
                if len(page) < self.PAGE:
                    break
                after = page[-1][0]
        self._built = True

    def _status(self, inv: str, st: InvocationStatus | None) -> None:
        if st is None:  # purged
            self.status.put(inv, [])
            self.events.put(inv, [])
            self.invoked.pop(inv, None)
            return
        self.status.put(inv, [rows.status_row(st)])
        self.events.put(inv, rows.event_rows(st))
        if rows.Invoked.reported(st):
            self.invoked[inv] = rows.Invoked.of(st)
        else:
            self.invoked.pop(inv, None)

    def _object(self, key: str, obj: ObjectStatus | None) -> None:
        if obj is None:
            self.inbox.put(key, [])
            self.keyed.put(key, [])
            return
        inbox, keyed = rows.object_rows(obj)
        self.inbox.put(key, inbox)
        self.keyed.put(key, keyed)

    def state_rows(self, now_ms: int) -> list[Row]:
        return [inv.row(now_ms) for inv in self.invoked.values()]
