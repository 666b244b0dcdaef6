"""A local, checkpointed copy of changelog partitions in SQLite.

Kafka Streams keeps each task's state in RocksDB next to a checkpoint file holding the changelog
offset the store reflects; after a restart only the changelog's tail is restored. This is the
same idea: one table of changelog key → latest value (what compaction would keep), one table of
checkpoints (partition → next changelog offset), updated in the same SQLite transaction.

A checkpoint also records the input (`commands`) offset its state was built up to. Kafka has
been seen to lose a committed transaction's markers when the broker restarted right after the
commit returned (the transaction later aborted): a store committed after that commit is then
ahead of Kafka. Its input offset, ahead of the group's committed offset, gives it away.

It is a cache. Nothing is lost by deleting the file: the changelog is the store, and a missing,
stale or foreign checkpoint only means restoring from the beginning.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 2  # 2: checkpoints.input_offset


@dataclass(frozen=True)
class Checkpoint:
    offset: int  # the next changelog offset to read
    written_at_ms: int  # wall clock of the write: tombstones older than delete.retention.ms vanish
    topic_id: str  # the changelog topic's id (or name) the offsets belong to
    input_offset: int = -1  # the input offset the state reflects (-1: not recorded)


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class ChangelogStore:
    """key → value of changelog records, plus per-partition checkpoints.

    Writes happen inside `begin()` … `commit()`/`rollback()`; reads see the open transaction's
    writes. One thread at a time (the owner hands it over, e.g. from a restorer to the loop).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path is not None else ":memory:", isolation_level=None, check_same_thread=False
        )
        if path is not None:
            # WAL + NORMAL: a crash of the process never corrupts; a power loss may drop the last
            # commits, which only makes the checkpoint older.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._in_txn = False
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        version = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        if version is not None and int(version[0]) != SCHEMA_VERSION:
            self._drop_tables()  # another layout: a cache, so rebuilt rather than migrated
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS checkpoints (
                partition INTEGER PRIMARY KEY, offset INTEGER NOT NULL,
                written_at_ms INTEGER NOT NULL, topic_id TEXT NOT NULL,
                input_offset INTEGER NOT NULL DEFAULT -1);
            """
        )
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    @property
    def db(self) -> sqlite3.Connection:
        """For derived tables kept beside the key/value table (same transaction)."""
        return self._db

    # -- transactions ---------------------------------------------------------------------------

    def begin(self) -> None:
        if not self._in_txn:
            self._db.execute("BEGIN")
            self._in_txn = True

    def commit(
        self,
        checkpoints: dict[int, int] | None = None,
        *,
        topic_id: str = "",
        now_ms: int = 0,
        input_offsets: dict[int, int] | None = None,
    ) -> None:
        """Commit the open transaction, recording `checkpoints` (partition → next changelog
        offset) and `input_offsets` (partition → the input offset the state now reflects)."""
        self.begin()
        inputs = input_offsets or {}
        for partition, offset in (checkpoints or {}).items():
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                (partition, offset, now_ms, topic_id, inputs.get(partition, -1)),
            )
        for partition, offset in inputs.items():
            if partition not in (checkpoints or {}):
                self._db.execute(
                    "UPDATE checkpoints SET input_offset = ? WHERE partition = ?", (offset, partition)
                )
        self._db.execute("COMMIT")
        self._in_txn = False

    def rollback(self) -> None:
        if self._in_txn:
            self._db.execute("ROLLBACK")
            self._in_txn = False

    # -- data -----------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, key: str, value: bytes | None) -> None:
        self.begin()
        if value is None:
            self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def scan(self, prefix: str, *, after: str | None = None, limit: int = -1) -> Iterator[tuple[str, bytes]]:
        """Records whose key starts with `prefix`, in key order (after `after`, if given)."""
        low = prefix if after is None or after < prefix else after
        op = ">" if after is not None and after >= prefix else ">="
        rows = self._db.execute(
            f"SELECT key, value FROM kv WHERE key {op} ? AND key < ? ORDER BY key LIMIT ?",
            (low, prefix_end(prefix), limit),
        ).fetchall()
        for key, value in rows:
            yield key, bytes(value)

    def count(self, prefix: str) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM kv WHERE key >= ? AND key < ?", (prefix, prefix_end(prefix))
        ).fetchone()
        return int(row[0])

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, partition: int) -> Checkpoint | None:
        row = self._db.execute(
            "SELECT offset, written_at_ms, topic_id, input_offset FROM checkpoints WHERE partition = ?",
            (partition,),
        ).fetchone()
        return None if row is None else Checkpoint(int(row[0]), int(row[1]), str(row[2]), int(row[3]))

    def resume_offset(
        self,
        partition: int,
        *,
        low: int,
        high: int,
        topic_id: str,
        max_age_ms: int,
        now_ms: int,
        committed_input: int | None = None,
    ) -> int | None:
        """Where to continue reading `partition` (whose offsets are now low..high), or None when
        the copy cannot be trusted and must be rebuilt from the beginning. `committed_input`: the
        input offset Kafka has committed for the partition, if the store follows one."""
        cp = self.checkpoint(partition)
        if cp is None or cp.topic_id != topic_id:
            return None  # never read, or another topic of the same name
        if cp.offset > high or cp.offset < low:
            return None  # the topic was recreated, or records we never saw were deleted
        if now_ms - cp.written_at_ms >= max_age_ms:
            return None  # compaction may have dropped tombstones we never saw
        if committed_input is not None and cp.input_offset > committed_input:
            return None  # ahead of Kafka: the transaction it was committed after was lost
        return cp.offset

    def wipe(self) -> None:
        """Forget everything (a checkpoint that cannot be trusted): restore from the beginning."""
        self.rollback()
        self._db.execute("BEGIN")
        for table in [r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")]:
            if table != "meta":
                self._db.execute(f"DELETE FROM {table}")
        self._db.execute("COMMIT")

    def _drop_tables(self) -> None:
        for table in [r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")]:
            if table != "meta":
                self._db.execute(f"DROP TABLE {table}")

    def close(self) -> None:
        self.rollback()
        self._db.close()
