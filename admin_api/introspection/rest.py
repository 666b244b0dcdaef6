"""`GET /invocations[/{id}]`: the seed's Invocation objects, read through the same SQL tables as
`/query` (so both say the same status), with filters and keyset paging.

Restate 1.7.12 has no such endpoint (its CLI lists invocations with SQL); the seed OpenAPI names
none of its parameters, so they mirror the CLI's `invocations list` filters:

- `service`, `handler`, `key`, `deployment` (pinned or last attempt's), `idempotency_key`:
  exact matches; `status`: the seed's values (`pending`, `ready`, `running`, `backing-off`,
  `suspended`, `completed`), comma-separated or repeated;
- `created_after`, `created_before`: RFC 3339 times;
- `limit` (default 100, at most 1000) and `page_token`: invocations come oldest first (creation
  time, then id); `next_page_token` in the answer asks for the page after.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from admin_api.introspection.query import QueryError, Source, in_list, quote_sql, run_query
from schemas.registry import Registry

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
SEED_STATUSES = ("pending", "ready", "running", "backing-off", "suspended", "completed")
# Restate's statuses the seed has no word for.
_SEED_STATUS_SQL = (
    "CASE status WHEN 'scheduled' THEN 'pending' WHEN 'paused' THEN 'backing-off' ELSE status END"
)
_DEPLOYMENT_SQL = "coalesce(pinned_deployment_id, last_attempt_deployment_id)"
_COLUMNS = (
    "id, target, target_service_name, target_handler_name, target_service_key, "
    f"{_SEED_STATUS_SQL} AS seed_status, created_at, modified_at, trace_id, "
    "coalesce(pinned_deployment_id, last_attempt_deployment_id) AS deployment_id, retry_count, "
    "last_failure, next_retry_at"
)
_TS = "arrow_cast({}, 'Timestamp(Millisecond, Some(\"+00:00\"))')"


class BadRequest(ValueError):
    """A parameter that does not parse: 400 with this message."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="milliseconds")


def invocation_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's Invocation schema from a `sys_invocation` row."""
    failure = row.get("last_failure")
    return {
        "id": row["id"],
        "target": row["target"],
        "target_service_name": row["target_service_name"],
        "target_handler_name": row["target_handler_name"],
        "target_service_key": row.get("target_service_key"),
        "status": row["seed_status"],
        "created_at": _iso(row["created_at"]),
        "modified_at": _iso(row["modified_at"]),
        "trace_id": row.get("trace_id") or "",  # kinvoke does no tracing
        "deployment_id": row.get("deployment_id") or "",
        "retry_count": row.get("retry_count") or 0,
        # `[500 Internal] message`: the stack trace that follows is in `/query`'s last_failure.
        "last_failure": failure.split("\n", 1)[0] if failure else None,
        "next_retry_at": _iso(row.get("next_retry_at")),
    }


def get_invocation(source: Source, registry: Registry, invocation_id: str) -> dict[str, Any] | None:
    sql = f"SELECT {_COLUMNS} FROM sys_invocation WHERE id = {quote_sql(invocation_id)} LIMIT 1"
    found = run_query(source, registry, sql).to_pylist()
    return invocation_json(found[0]) if found else None


def _values(query: Mapping[str, Sequence[str]], name: str) -> list[str]:
    return [v for raw in query.get(name, ()) for v in raw.split(",") if v]


def _one(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name, ())
    if len(values) > 1:
        raise BadRequest(f"query parameter '{name}' given more than once")
    return values[0] if values else None


def _time_ms(query: Mapping[str, Sequence[str]], name: str) -> int | None:
    raw = _one(query, name)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"query parameter '{name}': '{raw}' is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _token(created_at: datetime, invocation_id: str) -> str:
    ms = int(created_at.timestamp() * 1000)
    return base64.urlsafe_b64encode(json.dumps([ms, invocation_id]).encode()).decode().rstrip("=")


def _after(token: str) -> tuple[int, str]:
    try:
        ms, inv = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if isinstance(ms, int) and isinstance(inv, str):
            return ms, inv
    except (ValueError, binascii.Error, TypeError):
        pass
    raise BadRequest("query parameter 'page_token' is not a token this server gave out")


def list_invocations(
    source: Source, registry: Registry, query: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """`GET /invocations` (see the module docstring); BadRequest for a bad parameter."""
    where: list[str] = []
    for param, column in (
        ("service", "target_service_name"),
        ("handler", "target_handler_name"),
        ("key", "target_service_key"),
        ("idempotency_key", "idempotency_key"),
    ):
        if values := _values(query, param):
            where.append(f"{column} IN ({in_list(values)})")
    if deployments := _values(query, "deployment"):
        where.append(f"{_DEPLOYMENT_SQL} IN ({in_list(deployments)})")
    if statuses := _values(query, "status"):
        unknown = sorted(set(statuses) - set(SEED_STATUSES))
        if unknown:
            raise BadRequest(f"query parameter 'status': unknown {unknown}; one of {list(SEED_STATUSES)}")
        where.append(f"{_SEED_STATUS_SQL} IN ({in_list(statuses)})")
    if (after_ms := _time_ms(query, "created_after")) is not None:
        where.append(f"created_at > {_TS.format(after_ms)}")
    if (before_ms := _time_ms(query, "created_before")) is not None:
        where.append(f"created_at < {_TS.format(before_ms)}")
    if (token := _one(query, "page_token")) is not None:
        ms, inv = _after(token)
        ts = _TS.format(ms)
        where.append(f"(created_at > {ts} OR (created_at = {ts} AND id > {quote_sql(inv)}))")
    raw_limit = _one(query, "limit")
    try:
        limit = DEFAULT_LIMIT if raw_limit is None else int(raw_limit)
    except ValueError:
        raise BadRequest(f"query parameter 'limit': '{raw_limit}' is not a number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"query parameter 'limit' must be between 1 and {MAX_LIMIT}")
    sql = (
        f"SELECT {_COLUMNS} FROM sys_invocation"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY created_at, id LIMIT {limit + 1}"
    )
    try:
        found = run_query(source, registry, sql).to_pylist()
    except QueryError as e:  # a value the SQL could not take: the parameter's fault
        raise BadRequest(str(e)) from e
    body: dict[str, Any] = {"invocations": [invocation_json(r) for r in found[:limit]]}
    if len(found) > limit:
        last = found[limit - 1]
        body["next_page_token"] = _token(last["created_at"], last["id"])
    return body
