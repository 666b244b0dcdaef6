"""The admin's read-only view of the changelog: one local copy of every partition, plus the
tables `/query` keeps from it as records arrive (`index.LiveTables`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog
from confluent_kafka import Consumer, TopicPartition

from admin_api.introspection.index import LiveTables
from admin_api.introspection.query import Source
from kafka_core.changelog_records import ChangelogRecords
from kafka_core.changelog_store import ChangelogStore
from kafka_core.file_lock import FileLock, try_lock
from kafka_core.kafka import client_config
from kafka_core.views import TopicView
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)


class ChangelogView:
    """Every partition's changelog in one local copy (keys are unique across partitions).

    The copy is a checkpointed SQLite file under the state directory, as the processors keep
    theirs: a restarted admin reads only the changelog's tail. Without the file (or when another
    admin holds it) the copy is in memory and built from the beginning. Records applied are also
    marked in `live`, whose tables a query brings up to date before it reads them; they are first
    built right after start, in the background, so the first query does not pay for it.
    """

    COMMIT_EVERY = 5_000

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).changelog
        self._lock_file: FileLock | None = None
        path = Path(settings.state_dir) / settings.topic_prefix / "admin" / "changelog.sqlite"
        self._lock_file = try_lock(path.with_suffix(".lock"))
        kv = ChangelogStore(path if self._lock_file is not None else None)
        self.store = ChangelogRecords(kv)
        self.lock = threading.Lock()
        self.live = LiveTables()
        self.source = Source(self.store, self.lock, self.live)
        self._pending: dict[int, int] = {}  # partition -> next offset, applied but not committed
        self._uncommitted = 0
        self._view = TopicView(
            settings, self._topic, self._apply, name="admin-changelog", applied=self._resume_offsets(kv)
        )

    def _topic_id(self) -> str:
        return f"{self._topic}/{self._settings.partitions}"

    def _resume_offsets(self, kv: ChangelogStore) -> dict[int, int]:
        consumer = Consumer(
            client_config(self._settings, **{"group.id": f"{self._settings.topic_prefix}-admin"})
        )
        try:
            offsets: dict[int, int] = {}
            now = int(time.time() * 1000)
            for p in range(self._settings.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=30, cached=False
                )
                resume = kv.resume_offset(
                    p,
                    low=low,
                    high=high,
                    topic_id=self._topic_id(),
                    max_age_ms=self._settings.changelog_delete_retention_ms,
                    now_ms=now,
                )
                if resume is None:
                    kv.wipe()  # one untrustworthy partition: rebuild the whole copy
                    return {}
                offsets[p] = resume
            return offsets
        finally:
            consumer.close()

    def start(self) -> ChangelogView:
        self._view.start(ready_timeout_s=24 * 3600)  # progress is logged; no fixed limit
        threading.Thread(target=self._warm_up, name="admin-sql-tables", daemon=True).start()
        return self

    def _warm_up(self) -> None:
        started = time.monotonic()
        try:
            with self.lock:
                self.live.refresh(self.store)
        except Exception:  # the next query builds them (and reports what fails)
            log.exception("introspection.warm_up_failed")
            return
        log.info(
            "introspection.tables_built",
            invocations=len(self.live.status),
            seconds=round(time.monotonic() - started, 3),
        )

    def stop(self) -> None:
        self._view.stop()
        with self.lock:
            self._commit()
            self.store.kv.close()
        if self._lock_file is not None:
            self._lock_file.release()

    def health(self) -> str | None:
        return self._view.health()

    def catch_up(self, timeout_s: float) -> None:
        """Apply every changelog record committed before this call (TimeoutError if that cannot
        be done in time): a query then sees every invocation whose answer anyone has had."""
        self._view.catch_up(timeout_s)

    def _apply(self, key: str, value: bytes | None, partition: int, offset: int) -> None:
        with self.lock:
            self.store.kv.put(key, value)
            self.live.mark(key)
            self._pending[partition] = offset + 1
            self._uncommitted += 1
            if self._uncommitted >= self.COMMIT_EVERY:
                self._commit()

    def _commit(self) -> None:
        self.store.kv.commit(self._pending, topic_id=self._topic_id(), now_ms=int(time.time() * 1000))
        self._pending = {}
        self._uncommitted = 0
