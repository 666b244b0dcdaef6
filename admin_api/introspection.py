"""Introspection: `POST /query` (SQL over kinvoke's state, as Restate's `sys_*` tables) and
`GET /invocations[/{id}]`, served from a read-only view of the changelog.

The tables are built from the view on each query (pyarrow) and queried with DataFusion, which
runs the Restate CLI's SQL unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datafusion
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, TopicPartition

from kafka_core.changelog_records import ChangelogRecords
from kafka_core.changelog_store import ChangelogStore
from kafka_core.file_lock import FileLock, try_lock
from kafka_core.kafka import client_config
from kafka_core.views import TopicView
from schemas.ids import InvocationId, partition_key_of
from schemas.records import Failure, InvocationPhase, InvocationStatus, ServiceType, Success
from schemas.registry import Registry
from schemas.service_protocol import Frame, MessageType, decode_message, is_command
from schemas.settings import Settings
from schemas.topics import Topics

TS = pa.timestamp("ms", tz="+00:00")
_SERVICE_TY = {
    ServiceType.SERVICE: "service",
    ServiceType.VIRTUAL_OBJECT: "virtual_object",
    ServiceType.WORKFLOW: "workflow",
}
_PHASE = {
    InvocationPhase.INBOXED: "inboxed",
    InvocationPhase.SCHEDULED: "scheduled",
    InvocationPhase.INVOKED: "invoked",
    InvocationPhase.SUSPENDED: "suspended",
    InvocationPhase.PAUSED: "paused",
    InvocationPhase.COMPLETED: "completed",
}


class ChangelogView:
    """Every partition's changelog in one local copy (keys are unique across partitions).

    The copy is a checkpointed SQLite file under the state directory, as the processors keep
    theirs: a restarted admin reads only the changelog's tail. Without the file (or when another
    admin holds it) the copy is in memory and built from the beginning.
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
        return self

    def stop(self) -> None:
        self._view.stop()
        with self.lock:
            self._commit()
            self.store.kv.close()
        if self._lock_file is not None:
            self._lock_file.release()

    def health(self) -> str | None:
        return self._view.health()

    def _apply(self, key: str, value: bytes | None, partition: int, offset: int) -> None:
        with self.lock:
            self.store.kv.put(key, value)
            self._pending[partition] = offset + 1
            self._uncommitted += 1
            if self._uncommitted >= self.COMMIT_EVERY:
                self._commit()

    def _commit(self) -> None:
        self.store.kv.commit(self._pending, topic_id=self._topic_id(), now_ms=int(time.time() * 1000))
        self._pending = {}
        self._uncommitted = 0


def derived_status(status: InvocationStatus) -> str:
    """Restate's `sys_invocation.status`."""
    if status.phase == InvocationPhase.INBOXED:
        return "pending"
    if status.phase == InvocationPhase.INVOKED:
        return "backing-off" if status.retry_count > 0 else "running"
    return _PHASE[status.phase]


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def invocation_json(status: InvocationStatus) -> dict[str, Any]:
    """The seed's Invocation schema."""
    seed_status = {"scheduled": "pending", "paused": "backing-off"}
    s = derived_status(status)
    return {
        "id": status.invocation_id,
        "target": str(status.target),
        "target_service_name": status.target.service,
        "target_handler_name": status.target.handler,
        "target_service_key": status.target.key,
        "status": seed_status.get(s, s),
        "created_at": _iso(status.created_at_ms),
        "modified_at": _iso(status.modified_at_ms),
        "trace_id": "",
        "deployment_id": status.deployment_id or "",
        "retry_count": status.retry_count,
        "last_failure": status.last_failure.message if status.last_failure else None,
        "next_retry_at": _iso(status.next_retry_at_ms),
    }


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _invocation_rows(store: ChangelogRecords) -> list[dict[str, Any]]:
    rows = []
    for st in store.statuses():
        result = st.result
        failure = st.last_failure
        rows.append(
            {
                "partition_key": InvocationId.parse(st.invocation_id).partition_key,
                "id": st.invocation_id,
                "target": str(st.target),
                "target_service_name": st.target.service,
                "target_service_key": st.target.key,
                "target_handler_name": st.target.handler,
                "target_service_ty": _SERVICE_TY[st.target.service_ty],
                "idempotency_key": st.idempotency_key,
                "invoked_by": st.invoked_by.kind.value.lower(),
                "invoked_by_id": st.invoked_by.invocation_id,
                "invoked_by_target": st.invoked_by.target,
                "invoked_by_subscription_id": st.invoked_by.subscription_id,
                "pinned_deployment_id": st.deployment_id,
                "pinned_service_protocol_version": st.protocol_version,
                "trace_id": None,
                "journal_size": st.journal_length,
                "journal_commands_size": st.commands_count,
                "created_at": _ts(st.created_at_ms),
                "modified_at": _ts(st.modified_at_ms),
                "scheduled_at": _ts(st.execute_at_ms),
                "running_at": _ts(st.running_at_ms),
                "completed_at": _ts(st.completed_at_ms),
                "completion_result": None
                if result is None
                else ("failure" if isinstance(result, Failure) else "success"),
                "completion_failure": f"[{result.code}] {result.message}"
                if isinstance(result, Failure)
                else None,
                "phase": _PHASE[st.phase],
                "status": derived_status(st),
                "in_flight": st.phase == InvocationPhase.INVOKED,
                "retry_count": st.retry_count,
                "last_start_at": _ts(st.running_at_ms),
                "last_attempt_deployment_id": st.deployment_id,
                "last_attempt_server": st.last_attempt_server,
                "next_retry_at": _ts(st.next_retry_at_ms),
                "last_failure": failure.message if failure else None,
                "last_failure_error_code": str(failure.code) if failure else None,
                "last_failure_related_entry_index": failure.related_command_index if failure else None,
                "last_failure_related_entry_name": failure.related_command_name if failure else None,
                "last_failure_related_entry_type": (
                    Frame(failure.related_command_type, 0, b"").name
                    if failure and failure.related_command_type is not None
                    else None
                ),
                "last_failure_related_command_index": failure.related_command_index if failure else None,
                "last_failure_related_command_name": failure.related_command_name if failure else None,
                "last_failure_related_command_type": None,
            }
        )
    return rows


_INVOCATION_SCHEMA = pa.schema(
    [
        ("partition_key", pa.uint64()),
        ("id", pa.string()),
        ("target", pa.string()),
        ("target_service_name", pa.string()),
        ("target_service_key", pa.string()),
        ("target_handler_name", pa.string()),
        ("target_service_ty", pa.string()),
        ("idempotency_key", pa.string()),
        ("invoked_by", pa.string()),
        ("invoked_by_id", pa.string()),
        ("invoked_by_target", pa.string()),
        ("invoked_by_subscription_id", pa.string()),
        ("pinned_deployment_id", pa.string()),
        ("pinned_service_protocol_version", pa.uint32()),
        ("trace_id", pa.string()),
        ("journal_size", pa.uint32()),
        ("journal_commands_size", pa.uint32()),
        ("created_at", TS),
        ("modified_at", TS),
        ("scheduled_at", TS),
        ("running_at", TS),
        ("completed_at", TS),
        ("completion_result", pa.string()),
        ("completion_failure", pa.string()),
        ("phase", pa.string()),
        ("status", pa.string()),
        ("in_flight", pa.bool_()),
        ("retry_count", pa.uint64()),
        ("last_start_at", TS),
        ("last_attempt_deployment_id", pa.string()),
        ("last_attempt_server", pa.string()),
        ("next_retry_at", TS),
        ("last_failure", pa.string()),
        ("last_failure_error_code", pa.string()),
        ("last_failure_related_entry_index", pa.uint64()),
        ("last_failure_related_entry_name", pa.string()),
        ("last_failure_related_entry_type", pa.string()),
        ("last_failure_related_command_index", pa.uint64()),
        ("last_failure_related_command_name", pa.string()),
        ("last_failure_related_command_type", pa.string()),
    ]
)


def _entry_type(frame: Frame) -> str:
    kind = "Command" if is_command(frame.type) else "Notification"
    name = (
        frame.name.removesuffix("_COMMAND")
        .removesuffix("_COMPLETION_NOTIFICATION")
        .removesuffix("_NOTIFICATION")
    )
    return f"{kind}: {name.replace('_', ' ').title().replace(' ', '')}"


def _journal_rows(store: ChangelogRecords) -> list[dict[str, Any]]:
    rows = []
    for inv, entries in store.journals().items():
        pk = InvocationId.parse(inv).partition_key
        for e in entries:
            frame = Frame.parse(e.frame)
            row: dict[str, Any] = {
                "partition_key": pk,
                "id": inv,
                "index": e.index,
                "entry_type": _entry_type(frame),
                "name": None,
                "completed": None,
                "invoked_id": None,
                "invoked_target": None,
                "sleep_wakeup_at": None,
                "promise_name": None,
                "raw": e.frame,
                "raw_length": len(e.frame),
                "version": 2,
                "entry_json": None,
                "entry_lite_json": None,
                "appended_at": _ts(e.appended_at_ms),
            }
            try:
                msg = decode_message(frame)
            except Exception:  # noqa: BLE001 - custom entries are opaque
                msg = None
            if msg is not None and is_command(frame.type) and hasattr(msg, "name"):
                row["name"] = msg.name or None
            if frame.type == MessageType.SLEEP_COMMAND and msg is not None:
                row["sleep_wakeup_at"] = _ts(msg.wake_up_time)
            if frame.type in (MessageType.CALL_COMMAND, MessageType.ONE_WAY_CALL_COMMAND) and msg is not None:
                key = f"/{msg.key}" if msg.key else ""
                row["invoked_target"] = f"{msg.service_name}{key}/{msg.handler_name}"
            if (
                frame.type
                in (
                    MessageType.GET_PROMISE_COMMAND,
                    MessageType.PEEK_PROMISE_COMMAND,
                    MessageType.COMPLETE_PROMISE_COMMAND,
                )
                and msg is not None
            ):
                row["promise_name"] = msg.key
            rows.append(row)
    return rows


_JOURNAL_SCHEMA = pa.schema(
    [
        ("partition_key", pa.uint64()),
        ("id", pa.string()),
        ("index", pa.uint32()),
        ("entry_type", pa.string()),
        ("name", pa.string()),
        ("completed", pa.bool_()),
        ("invoked_id", pa.string()),
        ("invoked_target", pa.string()),
        ("sleep_wakeup_at", TS),
        ("promise_name", pa.string()),
        ("raw", pa.binary()),
        ("raw_length", pa.uint32()),
        ("version", pa.uint32()),
        ("entry_json", pa.string()),
        ("entry_lite_json", pa.string()),
        ("appended_at", TS),
    ]
)


def _state_rows(store: ChangelogRecords) -> list[dict[str, Any]]:
    rows = []
    for (service, key), entries in store.state().items():
        for name, value in entries.items():
            try:
                utf8: str | None = value.decode()
            except UnicodeDecodeError:
                utf8 = None
            rows.append(
                {
                    "partition_key": partition_key_of(key),
                    "scope": None,
                    "service_name": service,
                    "service_key": key,
                    "key": name.decode(errors="replace"),
                    "key_length": len(name),
                    "value_utf8": utf8,
                    "value": value,
                    "value_length": len(value),
                }
            )
    return rows


_STATE_SCHEMA = pa.schema(
    [
        ("partition_key", pa.uint64()),
        ("scope", pa.string()),
        ("service_name", pa.string()),
        ("service_key", pa.string()),
        ("key", pa.string()),
        ("key_length", pa.uint32()),
        ("value_utf8", pa.string()),
        ("value", pa.binary()),
        ("value_length", pa.uint32()),
    ]
)


def _tables(store: ChangelogRecords, registry: Registry) -> dict[str, pa.Table]:
    invocations = pa.Table.from_pylist(_invocation_rows(store), schema=_INVOCATION_SCHEMA)
    inbox = []
    keyed = []
    for (service, key), obj in store.objects().items():
        if obj.locked_by:
            keyed.append({"service_name": service, "service_key": key, "invocation_id": obj.locked_by})
        for seq, inv in enumerate(obj.inbox):
            st = store.status(inv)
            inbox.append(
                {
                    "service_name": service,
                    "service_key": key,
                    "id": inv,
                    "sequence_number": seq,
                    "created_at": _ts(st.created_at_ms if st else None),
                }
            )
    promises = [
        {
            "service_name": p.service,
            "service_key": p.key,
            "key": p.name,
            "completed": p.result is not None,
            "completion_success_value": p.result.value if isinstance(p.result, Success) else None,
            "completion_success_value_utf8": (
                p.result.value.decode(errors="replace") if isinstance(p.result, Success) else None
            ),
            "completion_failure": f"[{p.result.code}] {p.result.message}"
            if isinstance(p.result, Failure)
            else None,
        }
        for p in store.promises()
    ]
    services = [
        {
            "name": s.name,
            "revision": s.revision,
            "public": s.public,
            "ty": _SERVICE_TY[s.service_type],
            "deployment_id": s.deployment_id,
        }
        for s in registry.services.values()
    ]
    deployments = [
        {
            "id": d.id,
            "ty": "http",
            "endpoint": d.uri,
            "created_at": _ts(d.created_at_ms),
            "min_service_protocol_version": d.min_protocol_version,
            "max_service_protocol_version": d.max_protocol_version,
            "services": [r.name for r in d.services],
        }
        for d in registry.deployments.values()
    ]
    return {
        "sys_invocation": invocations,
        "sys_invocation_status": invocations,
        "sys_invocation_state": invocations.filter(pc.field("in_flight")),
        "sys_journal": pa.Table.from_pylist(_journal_rows(store), schema=_JOURNAL_SCHEMA),
        "state": pa.Table.from_pylist(_state_rows(store), schema=_STATE_SCHEMA),
        "sys_inbox": pa.Table.from_pylist(
            inbox,
            schema=pa.schema(
                [
                    ("service_name", pa.string()),
                    ("service_key", pa.string()),
                    ("id", pa.string()),
                    ("sequence_number", pa.uint64()),
                    ("created_at", TS),
                ]
            ),
        ),
        "sys_keyed_service_status": pa.Table.from_pylist(
            keyed,
            schema=pa.schema(
                [("service_name", pa.string()), ("service_key", pa.string()), ("invocation_id", pa.string())]
            ),
        ),
        "sys_promise": pa.Table.from_pylist(
            promises,
            schema=pa.schema(
                [
                    ("service_name", pa.string()),
                    ("service_key", pa.string()),
                    ("key", pa.string()),
                    ("completed", pa.bool_()),
                    ("completion_success_value", pa.binary()),
                    ("completion_success_value_utf8", pa.string()),
                    ("completion_failure", pa.string()),
                ]
            ),
        ),
        "sys_service": pa.Table.from_pylist(
            services,
            schema=pa.schema(
                [
                    ("name", pa.string()),
                    ("revision", pa.uint64()),
                    ("public", pa.bool_()),
                    ("ty", pa.string()),
                    ("deployment_id", pa.string()),
                ]
            ),
        ),
        "sys_deployment": pa.Table.from_pylist(
            deployments,
            schema=pa.schema(
                [
                    ("id", pa.string()),
                    ("ty", pa.string()),
                    ("endpoint", pa.string()),
                    ("created_at", TS),
                    ("min_service_protocol_version", pa.uint32()),
                    ("max_service_protocol_version", pa.uint32()),
                    ("services", pa.list_(pa.string())),
                ]
            ),
        ),
    }


class QueryError(Exception):
    """SQL that does not parse or plan: answered with 400 and DataFusion's message."""


def run_query(store: ChangelogRecords, registry: Registry, sql: str) -> pa.Table:
    ctx = datafusion.SessionContext(datafusion.SessionConfig().with_information_schema(True))
    for name, table in _tables(store, registry).items():
        batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]
        ctx.register_record_batches(name, [batches])
    try:
        return ctx.sql(sql).to_arrow_table()
    except Exception as e:  # DataFusion raises one exception type for parse/plan/execution errors
        raise QueryError(f"Datafusion error: {e}") from e


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def rows_json(table: pa.Table) -> bytes:
    """`{"rows": [...]}` like Arrow's JSON writer: nulls left out, binary as hex, RFC 3339 times."""
    rows = [{k: _json_value(v) for k, v in row.items() if v is not None} for row in table.to_pylist()]
    return json.dumps({"rows": rows}, separators=(",", ":")).encode()


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


__all__ = [
    "ChangelogView",
    "QueryError",
    "arrow_stream",
    "invocation_json",
    "rows_json",
    "run_query",
]
