"""`POST /query`: SQL over Restate's tables with DataFusion, loading only what a query reads.

A query is planned first against empty tables of the right schemas (so `information_schema`
and the `sys_invocation` view work, and errors come before any data is touched). The optimized
plan says which tables are scanned, which of their columns are read and which filters sit right
on a scan; only those tables then get data: the incrementally kept ones as cached Arrow batches
(`index.LiveTables`), journals, state and promises read from the local changelog copy, limited to
the invocations or objects an equality filter names (`WHERE id = '…'`, `service_name = … AND
service_key = …`). Then the query is planned again and runs.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import datafusion
import pyarrow as pa
from datafusion import SessionContext, SQLOptions

from admin_api.introspection import journal_json, rows
from admin_api.introspection.index import LiveTables, to_batch
from admin_api.introspection.schema import CATALOG, SCHEMA, SYS_INVOCATION, SYS_INVOCATION_VIEW, TABLES
from kafka_core.changelog_records import ChangelogRecords
from kafka_core.changelog_store import prefix_end
from schemas import changelog
from schemas.ids import InvalidId, InvocationId
from schemas.records import JournalEntry, Promise, StateEntry
from schemas.registry import Registry
from schemas.service_protocol import Frame

# Restate runs queries read-only (DDL and DML are refused, `SET` is allowed).
OPTIONS = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(True)
VIEW_BASES = ("sys_invocation_status", "sys_invocation_state")
JOURNAL_KEY_COLUMNS = frozenset({"partition_key", "id", "index"})


class QueryError(Exception):
    """SQL that Restate would refuse: `status` 400 (parse errors, refused statements) or 500
    (planning and execution errors, as Restate answers them), with DataFusion's message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_BAD_REQUEST = re.compile(
    r"^(SQL error:|Error during planning: (DDL|DML|Statement) not supported|"
    r"Error during planning: No SQL statements)"
)


def _error(e: Exception) -> QueryError:
    msg = str(e).removeprefix("DataFusion error: ")
    return QueryError(f"Datafusion error: {msg}", 400 if _BAD_REQUEST.match(msg) else 500)


@dataclass(frozen=True)
class Need:
    """What a query reads of one table: columns (None: all) and, per scan, the values of the
    key columns its filters pin (None: the scan reads everything)."""

    columns: frozenset[str] | None
    keys: list[dict[str, frozenset[Any]]] | None


def _values(expr: Any, column: str) -> frozenset[Any] | None:
    """The values `column` can have for `expr` to hold, None when `expr` does not pin it."""
    kind = type(expr.to_variant()).__name__
    v = expr.to_variant()
    if kind == "BinaryExpr":
        op = v.op()
        if op in ("AND", "And"):
            left, right = _values(v.left(), column), _values(v.right(), column)
            if left is None:
                return right
            return left if right is None else left & right
        if op in ("OR", "Or"):
            left, right = _values(v.left(), column), _values(v.right(), column)
            return None if left is None or right is None else left | right
        if op == "=":
            for col, lit in ((v.left(), v.right()), (v.right(), v.left())):
                if _is_column(col, column) and type(lit.to_variant()).__name__ == "Literal":
                    value = _literal(lit)
                    return frozenset([value]) if value is not None else frozenset()
        return None
    if kind == "InList" and not v.negated() and _is_column(v.expr(), column):
        items = list(v.list())
        if all(type(i.to_variant()).__name__ == "Literal" for i in items):
            return frozenset(_literal(i) for i in items)
    return None


def _literal(expr: Any) -> Any:
    """A literal's Python value (large strings come back as Arrow scalars)."""
    value = expr.python_value()
    return value.as_py() if hasattr(value, "as_py") else value


def _is_column(expr: Any, name: str) -> bool:
    v = expr.to_variant()
    return type(v).__name__ == "Column" and v.name() == name


KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "sys_journal": ("id",),
    "state": ("service_name", "service_key"),
    "sys_promise": ("service_name", "service_key"),
}


def plan_needs(plan: Any) -> dict[str, Need]:
    """Tables scanned by an optimized logical plan, with the columns and keys they need."""
    found: dict[str, list[tuple[frozenset[str], dict[str, frozenset[Any]] | None]]] = defaultdict(list)

    def walk(node: Any, predicate: Any | None) -> None:
        v = node.to_variant()
        kind = type(v).__name__
        if kind == "TableScan":
            catalog, schema, table = v.fqn()
            if (catalog in (None, CATALOG)) and (schema in (None, SCHEMA)) and table in TABLES:
                cols = frozenset(name for _, name in v.projection())
                keys: dict[str, frozenset[Any]] | None = None
                exprs = list(v.filters()) + ([predicate] if predicate is not None else [])
                if table in KEY_COLUMNS:
                    pinned: dict[str, frozenset[Any]] = {}
                    for column in KEY_COLUMNS[table]:
                        for e in exprs:
                            values = _values(e, column)
                            if values is not None:
                                pinned[column] = values if column not in pinned else pinned[column] & values
                    keys = pinned
                found[table].append((cols, keys))
            return
        child_predicate = v.predicate() if kind == "Filter" else None
        for child in node.inputs():
            walk(child, child_predicate)

    walk(plan, None)
    text = plan.display_indent()
    needs: dict[str, Need] = {}
    for table, scans in found.items():
        # A projection that is empty (`count(*)`) still needs the rows.
        columns: frozenset[str] | None = frozenset().union(*(c for c, _ in scans))
        keys = [k for _, k in scans if k is not None]
        needs[table] = Need(columns, keys if len(keys) == len(scans) else None)
    # Scans the walk cannot see (e.g. inside subquery expressions): everything, to be safe.
    for table in TABLES:
        if table not in needs and re.search(rf"\b{table}\b", text):
            needs[table] = Need(None, None)
    return needs


def _context() -> SessionContext:
    config = (
        datafusion.SessionConfig()
        .with_information_schema(True)
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
    )
    ctx = SessionContext(config)
    for name, schema in TABLES.items():
        ctx.register_record_batches(name, [[_empty(schema)]])
    ctx.sql(SYS_INVOCATION_VIEW)
    return ctx


_EMPTY: dict[int, pa.RecordBatch] = {}


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    key = id(schema)
    if key not in _EMPTY:
        _EMPTY[key] = to_batch(schema, [])
    return _EMPTY[key]


class Source:
    """What queries read: the local changelog copy (under `lock`) and its live tables."""

    def __init__(
        self, store: ChangelogRecords, lock: AbstractContextManager[Any], live: LiveTables | None = None
    ) -> None:
        self.store = store
        self.lock = lock
        self.live = live if live is not None else LiveTables()


def run_query(source: Source, registry: Registry, sql: str, now_ms: int | None = None) -> pa.Table:
    ctx = _context()
    try:
        planned = ctx.sql_with_options(sql, OPTIONS)
        needs = plan_needs(planned.optimized_logical_plan())
    except Exception as e:  # DataFusion raises one exception type for parse/plan errors
        raise _error(e) from e
    if needs:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with source.lock:
            data = {name: _load(source, registry, name, need, now) for name, need in needs.items()}
        for name, batches in data.items():
            ctx.deregister_table(name)
            ctx.register_record_batches(name, _partitions(batches or [_empty(TABLES[name])]))
        if any(name in data for name in VIEW_BASES):
            ctx.deregister_table(SYS_INVOCATION)
            ctx.sql(SYS_INVOCATION_VIEW)
    try:
        return ctx.sql_with_options(sql, OPTIONS).to_arrow_table()
    except Exception as e:
        raise _error(e) from e


def _partitions(batches: list[pa.RecordBatch], parts: int = 2) -> list[list[pa.RecordBatch]]:
    """Batches spread over a few partitions, so DataFusion scans them in parallel."""
    n = max(1, min(parts, len(batches)))
    return [batches[i::n] for i in range(n)]


def _load(source: Source, registry: Registry, name: str, need: Need, now_ms: int) -> list[pa.RecordBatch]:
    live, store = source.live, source.store
    schema = TABLES[name]
    if name in ("sys_invocation_status", "sys_journal_events", "sys_inbox", "sys_keyed_service_status"):
        live.refresh(store)
        return {
            "sys_invocation_status": live.status,
            "sys_journal_events": live.events,
            "sys_inbox": live.inbox,
            "sys_keyed_service_status": live.keyed,
        }[name].batches()
    if name == "sys_invocation_state":
        live.refresh(store)
        return [to_batch(schema, live.state_rows(now_ms))]
    if name == "sys_service":
        return [to_batch(schema, [rows.service_row(s) for s in registry.services.values()])]
    if name == "sys_deployment":
        return [to_batch(schema, [rows.deployment_row(d) for d in registry.deployments.values()])]
    if name == "sys_journal":
        return [to_batch(schema, list(_journal(store, need)))]
    if name == "state":
        # Scoped instances' state (admin edits with a `scope`) is scanned whole: keyed by scope first.
        found = _scan(store, [*_prefixes(changelog.STATE, need), f"{changelog.SCOPED_STATE}/"])
        return [to_batch(schema, [rows.state_row(StateEntry.decode(v)) for _, v in found])]
    if name == "sys_promise":
        found = _scan(store, _prefixes(changelog.PROMISE, need))
        return [to_batch(schema, [rows.promise_row(Promise.decode(v)) for _, v in found])]
    # sys_locks (vqueue locks; object locks are in sys_keyed_service_status, as on Restate without
    # vqueues), sys_rules, sys_scheduler, sys_user_limits, sys_vqueue*: kinvoke has no vqueues
    # nor concurrency rules, so these stay empty.
    return []


def _prefixes(kind: str, need: Need) -> list[str]:
    """Changelog key prefixes covering the rows a need asks for (the whole kind if unpinned)."""
    if need.keys is None:
        return [f"{kind}/"]
    out: set[str] = set()
    for scan in need.keys:
        if kind == changelog.JOURNAL:
            ids = scan.get("id")
            if ids is None:
                return [f"{kind}/"]
            out |= {f"{kind}/{i}/" for i in ids if isinstance(i, str) and "/" not in i}
            continue
        services, keys = scan.get("service_name"), scan.get("service_key")
        if services is None:
            return [f"{kind}/"]
        names = [s for s in services if isinstance(s, str) and "/" not in s]
        if keys is None:
            out |= {f"{kind}/{s}/" for s in names}
        else:
            out |= {f"{kind}/{s}/{quote(k, safe='')}/" for s in names for k in keys if isinstance(k, str)}
    return sorted(out)


def _scan(store: ChangelogRecords, prefixes: list[str]) -> Iterator[tuple[str, bytes]]:
    for prefix in prefixes:
        yield from store.kv.scan(prefix)


def _journal(store: ChangelogRecords, need: Need) -> Iterator[rows.Row]:
    prefixes = _prefixes(changelog.JOURNAL, need)
    if need.columns is not None and need.columns <= JOURNAL_KEY_COLUMNS:
        yield from _journal_keys(store, prefixes)  # no entry decoded (e.g. `count(*)`)
        return
    entries: dict[str, list[JournalEntry]] = defaultdict(list)
    for _, raw in _scan(store, prefixes):
        e = JournalEntry.decode(raw)
        entries[e.invocation_id].append(e)
    with_json = need.columns is None or bool(need.columns & rows.JOURNAL_JSON_COLUMNS)

    for inv, journal in entries.items():
        callees = (
            journal_json.callees([(e.index, Frame.parse(e.frame)) for e in journal], store.status)
            if with_json
            else {}
        )
        yield from rows.journal_rows(inv, journal, callees, need.columns)


def _journal_keys(store: ChangelogRecords, prefixes: list[str]) -> Iterator[rows.Row]:
    width = len(TABLES["sys_journal"])
    for prefix in prefixes:
        keys = store.kv.db.execute(
            "SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, prefix_end(prefix))
        ).fetchall()
        for (key,) in keys:
            parsed = changelog.parse_key(key)
            row: list[Any] = [None] * width
            row[0] = _pk(parsed.invocation_id)
            row[1], row[2] = parsed.invocation_id, parsed.index
            yield tuple(row)


def _pk(invocation_id: str) -> int | None:
    try:
        return InvocationId.parse(invocation_id).partition_key
    except InvalidId:
        return None


# -- answers --------------------------------------------------------------------------------------


def _iso_ms(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")


def _duration(value: timedelta) -> str:
    """Arrow's JSON writer: ISO 8601, e.g. `PT86400S`, `PT1.5S`."""
    ms = round(value.total_seconds() * 1000)
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    secs, rest = divmod(ms, 1000)
    frac = f".{rest:03d}".rstrip("0") if rest else ""
    return f"{sign}PT{secs}{frac}S"


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return _iso_ms(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items() if v is not None}
    return value


def rows_json(table: pa.Table) -> bytes:
    """`{"rows": [...]}` as Arrow's JSON writer makes it: nulls left out, binary as hex, times
    RFC 3339, durations ISO 8601."""
    out = [{k: _json_value(v) for k, v in row.items() if v is not None} for row in table.to_pylist()]
    return json.dumps({"rows": out}, separators=(",", ":"), ensure_ascii=False).encode()


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def quote_sql(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def in_list(values: Iterable[str]) -> str:
    return ", ".join(quote_sql(v) for v in values)


__all__ = ["Need", "QueryError", "Source", "arrow_stream", "plan_needs", "rows_json", "run_query"]
