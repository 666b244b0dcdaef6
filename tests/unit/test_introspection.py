"""`/query` and `/invocations` as Restate 1.7.12 answers them: tables and types, rows made of the
state machine's records, the plan-driven loading, incremental tables, errors, filters and paging.

Expected values come from a Restate 1.7.12 server queried with the same handlers
(`information_schema.columns`, `sys_invocation` rows, `last_failure` text).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa
import pytest
from aiohttp.test_utils import TestClient, TestServer

from admin_api import app as admin_app
from admin_api import introspection
from admin_api.introspection.index import KeyedTable, LiveTables
from admin_api.introspection.query import Source, plan_needs, run_query
from admin_api.introspection.schema import TABLES
from admin_api.store import MemoryRegistryStore
from schemas import changelog
from schemas.ids import InvocationId, partition_key_of
from schemas.records import (
    AttemptFailed,
    AttemptProgress,
    Command,
    Ended,
    HandlerType,
    InvocationOperation,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    PatchState,
    ResolvedCallee,
    ServiceType,
    Suspended,
)
from schemas.registry import Registry
from schemas.service_protocol import MessageType, encode_message
from schemas.service_protocol import protocol_pb2 as pb
from schemas.settings import Settings
from tests.unit.state_machine.conftest import Harness, attempt, output, output_failure, propose, run, sleep
from tests.unit.state_machine.test_pause_resume import operate

T0 = 1_795_000_000_000  # 2026-11-18T11:06:40Z
STACK = (
    'Traceback (most recent call last):\n  File "services.py", line 66, in flaky\nRuntimeError: flaky: boom\n'
)

# information_schema.columns of Restate 1.7.12 (catalog restate, schema public), in column order.
RESTATE_COLUMNS = {
    "state": (
        "partition_key UInt64; scope LargeUtf8; service_name LargeUtf8; service_key LargeUtf8; "
        "key LargeUtf8; key_length UInt64; value_utf8 LargeUtf8; value LargeBinary; value_length UInt64"
    ),
    "sys_deployment": (
        'id LargeUtf8; ty LargeUtf8; endpoint LargeUtf8; created_at Timestamp(ms, "+00:00"); '
        "min_service_protocol_version UInt32; max_service_protocol_version UInt32; "
        "services List(LargeUtf8)"
    ),
    "sys_inbox": (
        "partition_key UInt64; service_name LargeUtf8; service_key LargeUtf8; id LargeUtf8; "
        'sequence_number UInt64; created_at Timestamp(ms, "+00:00")'
    ),
    "sys_invocation": (
        "id LargeUtf8; vqueue_id LargeUtf8; target LargeUtf8; target_service_name LargeUtf8; "
        "target_service_key LargeUtf8; target_handler_name LargeUtf8; target_service_ty LargeUtf8; "
        "scope LargeUtf8; limit_key LargeUtf8; idempotency_key LargeUtf8; invoked_by LargeUtf8; "
        "invoked_by_service_name LargeUtf8; invoked_by_id LargeUtf8; "
        "invoked_by_subscription_id LargeUtf8; invoked_by_target LargeUtf8; restarted_from LargeUtf8; "
        "pinned_deployment_id LargeUtf8; pinned_service_protocol_version UInt32; trace_id LargeUtf8; "
        'journal_size UInt32; journal_commands_size UInt32; created_at Timestamp(ms, "+00:00"); '
        'created_using_restate_version LargeUtf8; modified_at Timestamp(ms, "+00:00"); '
        'inboxed_at Timestamp(ms, "+00:00"); scheduled_at Timestamp(ms, "+00:00"); '
        'scheduled_start_at Timestamp(ms, "+00:00"); running_at Timestamp(ms, "+00:00"); '
        'completed_at Timestamp(ms, "+00:00"); completion_retention Duration(ms); '
        "journal_retention Duration(ms); suspended_waiting_for_completions List(UInt32); "
        "suspended_waiting_for_signals List(UInt32); suspended_waiting_future_json LargeUtf8; "
        'retry_count UInt64; last_start_at Timestamp(ms, "+00:00"); next_retry_at Timestamp(ms, "+00:00"); '
        "last_attempt_deployment_id LargeUtf8; last_attempt_server LargeUtf8; last_failure LargeUtf8; "
        "last_failure_error_code LargeUtf8; last_failure_related_entry_index UInt64; "
        "last_failure_related_entry_name LargeUtf8; last_failure_related_entry_type LargeUtf8; "
        "last_failure_related_command_index UInt64; last_failure_related_command_name LargeUtf8; "
        "last_failure_related_command_type LargeUtf8; last_awaiting_on_future_json LargeUtf8; "
        "status LargeUtf8 NOT NULL; completion_result LargeUtf8; completion_failure LargeUtf8"
    ),
    "sys_invocation_state": (
        "partition_key UInt64; id LargeUtf8; in_flight Boolean; retry_count UInt64; "
        'last_start_at Timestamp(ms, "+00:00"); last_attempt_deployment_id LargeUtf8; '
        'last_attempt_server LargeUtf8; next_retry_at Timestamp(ms, "+00:00"); last_failure LargeUtf8; '
        "last_failure_error_code LargeUtf8; last_failure_related_command_index UInt64; "
        "last_failure_related_command_name LargeUtf8; last_failure_related_command_type LargeUtf8; "
        "last_failure_related_entry_index UInt64; last_failure_related_entry_name LargeUtf8; "
        "last_failure_related_entry_type LargeUtf8; last_awaiting_on_future_json LargeUtf8"
    ),
    "sys_invocation_status": (
        "partition_key UInt64; id LargeUtf8; vqueue_id LargeUtf8; status LargeUtf8; "
        "completion_result LargeUtf8; completion_failure LargeUtf8; target LargeUtf8; "
        "target_service_name LargeUtf8; target_service_key LargeUtf8; target_handler_name LargeUtf8; "
        "target_service_ty LargeUtf8; scope LargeUtf8; limit_key LargeUtf8; idempotency_key LargeUtf8; "
        "invoked_by LargeUtf8; invoked_by_id LargeUtf8; invoked_by_subscription_id LargeUtf8; "
        "invoked_by_service_name LargeUtf8; invoked_by_target LargeUtf8; restarted_from LargeUtf8; "
        "pinned_deployment_id LargeUtf8; pinned_service_protocol_version UInt32; trace_id LargeUtf8; "
        'journal_size UInt32; journal_commands_size UInt32; created_at Timestamp(ms, "+00:00"); '
        'created_using_restate_version LargeUtf8; modified_at Timestamp(ms, "+00:00"); '
        'inboxed_at Timestamp(ms, "+00:00"); scheduled_at Timestamp(ms, "+00:00"); '
        'scheduled_start_at Timestamp(ms, "+00:00"); running_at Timestamp(ms, "+00:00"); '
        'completed_at Timestamp(ms, "+00:00"); completion_retention Duration(ms); '
        "journal_retention Duration(ms); suspended_waiting_for_completions List(UInt32); "
        "suspended_waiting_for_signals List(UInt32); suspended_waiting_future_json LargeUtf8"
    ),
    "sys_journal": (
        "partition_key UInt64; id LargeUtf8; index UInt32; entry_type LargeUtf8; name LargeUtf8; "
        "completed Boolean; invoked_id LargeUtf8; invoked_target LargeUtf8; "
        'sleep_wakeup_at Timestamp(ms, "+00:00"); promise_name LargeUtf8; raw LargeBinary; '
        "raw_length UInt64; version UInt32; entry_json LargeUtf8; entry_lite_json LargeUtf8; "
        'appended_at Timestamp(ms, "+00:00")'
    ),
    "sys_journal_events": (
        "partition_key UInt64; id LargeUtf8; after_journal_entry_index UInt32; "
        'appended_at Timestamp(ms, "+00:00"); event_type LargeUtf8; event_json LargeUtf8'
    ),
    "sys_keyed_service_status": (
        "partition_key UInt64; service_name LargeUtf8; service_key LargeUtf8; invocation_id LargeUtf8"
    ),
    "sys_locks": (
        'partition_key UInt64; scope LargeUtf8; lock_name LargeUtf8; acquired_at Timestamp(ms, "+00:00"); '
        "acquired_by LargeUtf8"
    ),
    "sys_promise": (
        "partition_key UInt64; scope LargeUtf8; service_name LargeUtf8; service_key LargeUtf8; "
        "key LargeUtf8; completed Boolean; completion_success_value LargeBinary; "
        "completion_success_value_utf8 LargeUtf8; completion_failure LargeUtf8"
    ),
    "sys_rules": (
        "pattern LargeUtf8; concurrency UInt32; description LargeUtf8; disabled Boolean; version UInt32; "
        'last_modified Timestamp(ms, "+00:00")'
    ),
    "sys_scheduler": (
        "partition_key UInt64; id LargeUtf8; num_inbox UInt64; status LargeUtf8; head_entry_id LargeUtf8; "
        'scheduled_at Timestamp(ms, "+00:00"); blocked_on LargeUtf8; blocked_on_json LargeUtf8; '
        "invoker_concurrency_block_duration Duration(ms); throttling_rules_block_duration Duration(ms); "
        "invoker_throttling_block_duration Duration(ms); invoker_memory_block_duration Duration(ms); "
        "concurrency_rules_block_duration Duration(ms); lock_block_duration Duration(ms); "
        "deployment_concurrency_block_duration Duration(ms)"
    ),
    "sys_service": ("name LargeUtf8; revision UInt64; public Boolean; ty LargeUtf8; deployment_id LargeUtf8"),
    "sys_user_limits": (
        "partition_key UInt64; scope LargeUtf8; l1 LargeUtf8; l2 LargeUtf8; level LargeUtf8; "
        "usage UInt32; concurrency_limit UInt32; rule_pattern LargeUtf8; available UInt32; "
        "num_waiters UInt64"
    ),
    "sys_vqueue_entry_status": (
        "partition_key UInt64; entry_id LargeUtf8; vqueue_id LargeUtf8; stage LargeUtf8; status LargeUtf8; "
        'has_lock Boolean; next_at Timestamp(ms, "+00:00"); sequence_number UInt64; entry_kind LargeUtf8; '
        'created_at Timestamp(ms, "+00:00"); transitioned_at Timestamp(ms, "+00:00"); num_attempts UInt32; '
        "num_errors UInt32; num_pauses UInt32; num_suspensions UInt32; num_yields UInt32; "
        'first_attempt_at Timestamp(ms, "+00:00"); latest_attempt_at Timestamp(ms, "+00:00"); '
        'first_runnable_at Timestamp(ms, "+00:00"); deployment LargeUtf8; needed_memory UInt64; '
        "retry_attempts UInt32; retry_count_since_last_stored_command UInt32; "
        "latest_attempt_blocked_on_invoker_concurrency Duration(ms); "
        "latest_attempt_blocked_on_throttling_rules Duration(ms); "
        "latest_attempt_blocked_on_invoker_throttling Duration(ms); "
        "latest_attempt_blocked_on_invoker_memory Duration(ms); "
        "latest_attempt_blocked_on_concurrency_rules Duration(ms); "
        "latest_attempt_blocked_on_lock Duration(ms); "
        "latest_attempt_blocked_on_deployment_concurrency Duration(ms); "
        "total_blocked_on_invoker_concurrency Duration(ms); total_blocked_on_throttling_rules Duration(ms); "
        "total_blocked_on_invoker_throttling Duration(ms); total_blocked_on_invoker_memory Duration(ms); "
        "total_blocked_on_concurrency_rules Duration(ms); total_blocked_on_lock Duration(ms); "
        "total_blocked_on_deployment_concurrency Duration(ms)"
    ),
    "sys_vqueue_meta": (
        "partition_key UInt64; id LargeUtf8; is_active Boolean; queue_is_paused Boolean; "
        "service_name LargeUtf8; scope LargeUtf8; limit_key LargeUtf8; lock_name LargeUtf8; "
        'created_at Timestamp(ms, "+00:00"); last_enqueued_at Timestamp(ms, "+00:00"); '
        'last_start_at Timestamp(ms, "+00:00"); last_attempt_at Timestamp(ms, "+00:00"); '
        'last_finish_at Timestamp(ms, "+00:00"); avg_queue_duration Duration(ms); '
        "avg_inbox_duration Duration(ms); avg_run_duration Duration(ms); "
        "avg_suspension_duration Duration(ms); "
        "avg_end_to_end_duration Duration(ms); avg_blocked_on_concurrency_rules Duration(ms); "
        "avg_blocked_on_invoker_concurrency Duration(ms); avg_blocked_on_invoker_throttling Duration(ms); "
        "avg_blocked_on_lock Duration(ms); num_inbox UInt64; num_running UInt64; num_suspended UInt64; "
        "num_paused UInt64; num_finished UInt64"
    ),
    "sys_vqueues": (
        "partition_key UInt64; id LargeUtf8; stage LargeUtf8; status LargeUtf8; has_lock Boolean; "
        'run_at Timestamp(ms, "+00:00"); sequence_number UInt64; entry_id LargeUtf8; entry_kind LargeUtf8; '
        'created_at Timestamp(ms, "+00:00"); transitioned_at Timestamp(ms, "+00:00"); num_attempts UInt32; '
        "num_errors UInt32; num_pauses UInt32; num_suspensions UInt32; num_yields UInt32; "
        'first_attempt_at Timestamp(ms, "+00:00"); latest_attempt_at Timestamp(ms, "+00:00"); '
        'first_runnable_at Timestamp(ms, "+00:00"); deployment LargeUtf8'
    ),
}


def inv(n: int, key: str | None = None) -> str:
    pk = partition_key_of(key) if key is not None else n
    return str(InvocationId.generate(pk, T0 + n, n))


def target(service: str, handler: str, key: str | None = None) -> InvocationTarget:
    if key is None:
        return InvocationTarget(service=service, handler=handler, service_ty=ServiceType.SERVICE)
    return InvocationTarget(
        service=service,
        handler=handler,
        key=key,
        service_ty=ServiceType.VIRTUAL_OBJECT,
        handler_ty=HandlerType.EXCLUSIVE,
    )


def invoke(invocation_id: str, t: InvocationTarget, ts: int, **extra: Any) -> Command:
    body = Invoke(
        invocation_id=invocation_id,
        target=t,
        argument=b'"x"',
        invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        **extra,
    )
    return Command(timestamp_ms=ts, body=body)


def call_frame() -> bytes:
    msg = pb.CallCommandMessage(
        service_name="Greeter",
        handler_name="greet",
        parameter=b'"Dave"',
        invocation_id_notification_idx=1,
        result_completion_id=2,
    )
    return encode_message(MessageType.CALL_COMMAND, msg)


GREET, FLAKY, NAP, CALLER, OBJ_A, OBJ_B, LATER = (
    inv(1),
    inv(2),
    inv(3),
    inv(4),
    inv(5, "k1"),
    inv(6, "k1"),
    inv(7),
)


@pytest.fixture
def world() -> Harness:
    return make_world()


def make_world() -> Harness:
    """A completed, a backing-off, a suspended, a calling, a running and an inboxed invocation."""
    sm = Harness()
    failed = AttemptFailed(
        code=500,
        message="RuntimeError('flaky: boom')",
        stacktrace=STACK,
        related_command_index=1,
        related_command_name="step-1",
        related_command_type=MessageType.RUN_COMMAND,
    )
    sm.apply(
        invoke(GREET, target("Greeter", "greet"), T0),
        attempt(T0 + 5, 1, [run(1, "step-1"), propose(1, b"6"), output(b'"hi"')], Ended(), inv=GREET),
        invoke(FLAKY, target("Failing", "flaky"), T0 + 10),
        attempt(T0 + 20, 1, [], failed, inv=FLAKY),  # retry due at T0 + 520
        invoke(NAP, target("Greeter", "nap"), T0 + 30),
        attempt(T0 + 40, 1, [sleep(1)], Suspended(waiting_completions=[1], waiting_signals=[1]), inv=NAP),
        invoke(CALLER, target("Caller", "call_greet"), T0 + 50),
        attempt(
            T0 + 60,
            1,
            [call_frame()],
            Suspended(waiting_completions=[2]),
            inv=CALLER,
            callees=[ResolvedCallee(service_ty=ServiceType.SERVICE)],
        ),
        invoke(OBJ_A, target("Counter", "add", "k1"), T0 + 70),
        invoke(OBJ_B, target("Counter", "add", "k1"), T0 + 80),
        invoke(LATER, target("Greeter", "greet"), T0 + 90, execute_at_ms=T0 + 86_400_000),
    )
    # The caller's child, as the processor would apply the Invoke it produced.
    child = next(a.command for s in sm.steps for a in s.actions if getattr(a, "command", None))
    sm.apply(child)
    return sm


def query(sm: Harness, sql: str, now_ms: int = T0 + 100, registry: Registry | None = None) -> list[dict]:
    table = run_query(Source(sm.store, threading.Lock()), registry or Registry(), sql, now_ms=now_ms)
    rows: list[dict] = json.loads(introspection.rows_json(table))["rows"]
    return rows


def test_tables_columns_and_types_are_restates(world: Harness) -> None:
    rows = query(
        world,
        "SELECT table_catalog, table_schema, table_name, column_name, data_type, is_nullable "
        "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    )
    assert {(r["table_catalog"], r["table_schema"]) for r in rows} == {("restate", "public")}
    ours: dict[str, list[str]] = {}
    for r in rows:
        not_null = "" if r["is_nullable"] == "YES" else " NOT NULL"
        ours.setdefault(r["table_name"], []).append(f"{r['column_name']} {r['data_type']}{not_null}")
    assert {t: "; ".join(cols) for t, cols in ours.items()} == RESTATE_COLUMNS
    assert len(RESTATE_COLUMNS) == 18
    views = query(
        world,
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW' "
        "AND table_schema = 'public'",
    )
    assert views == [{"table_name": "sys_invocation"}]


def test_a_completed_invocation_as_restate_shows_it(world: Harness) -> None:
    [row] = query(world, f"SELECT * FROM sys_invocation WHERE id = '{GREET}'")
    assert row == {
        "id": GREET,
        "target": "Greeter/greet",
        "target_service_name": "Greeter",
        "target_handler_name": "greet",
        "target_service_ty": "service",
        "invoked_by": "ingress",
        "pinned_deployment_id": "dp_1",
        "pinned_service_protocol_version": 6,
        "journal_size": 4,
        "journal_commands_size": 3,
        "created_at": "2026-11-18T11:06:40.000+00:00",
        "created_using_restate_version": "1.7.12",
        "modified_at": "2026-11-18T11:06:40.005+00:00",
        "running_at": "2026-11-18T11:06:40.000+00:00",
        "completed_at": "2026-11-18T11:06:40.005+00:00",
        "completion_retention": "PT86400S",
        "journal_retention": "PT86400S",
        "status": "completed",
        "completion_result": "success",
    }
    assert introspection.rows_json(pa.table({"d": pa.array([1500], pa.duration("ms"))})) == (
        b'{"rows":[{"d":"PT1.5S"}]}'
    )


def test_a_failed_attempt_is_the_last_failure_while_backing_off_then_running(world: Harness) -> None:
    sql = f"SELECT * FROM sys_invocation WHERE id = '{FLAKY}'"
    [backing_off] = query(world, sql, now_ms=T0 + 100)
    assert {k: v for k, v in backing_off.items() if k.startswith(("last_", "retry", "next", "status"))} == {
        "retry_count": 1,
        "next_retry_at": "2026-11-18T11:06:40.520+00:00",
        "last_attempt_deployment_id": "dp_1",
        "last_failure": f"[500 Internal] RuntimeError('flaky: boom')\n{STACK}",
        "last_failure_error_code": "RT0007",
        # As on Restate for protocol >= V4: the related command, not the deprecated entry columns.
        "last_failure_related_command_index": 1,
        "last_failure_related_command_name": "step-1",
        "last_failure_related_command_type": "Run",
        "status": "backing-off",
    }
    assert "pinned_deployment_id" not in backing_off  # the attempt stored nothing
    [running] = query(world, sql, now_ms=T0 + 600)  # the retry is due: it runs
    assert running["status"] == "running" and running["retry_count"] == 2
    assert running["last_start_at"] == "2026-11-18T11:06:40.520+00:00" and "next_retry_at" not in running
    [event] = query(world, f"SELECT * FROM sys_journal_events WHERE id = '{FLAKY}'")
    assert event["event_type"] == "TransientError" and event["after_journal_entry_index"] == 0
    assert json.loads(event["event_json"]) == {
        "ty": "TransientError",
        "error_code": 500,
        "error_message": "RuntimeError('flaky: boom')",
        "error_stacktrace": STACK,
        "restate_doc_error_code": "RT0007",
        "related_command_index": 1,
        "related_command_name": "step-1",
        "related_command_type": "Run",
    }


def _retry_columns(world: Harness, inv: str, now_ms: int) -> dict:
    [row] = query(
        world,
        "SELECT status, retry_count, next_retry_at, last_start_at, last_failure, last_failure_error_code "
        f"FROM sys_invocation WHERE id = '{inv}'",
        now_ms=now_ms,
    )
    if "last_failure" in row:
        row["last_failure"] = row["last_failure"].split("\n")[0]
    return row


FLAKY_FAILURE = "[500 Internal] RuntimeError('flaky: boom')"


def test_paused_while_backing_off_the_retry_columns_stay_and_the_count_goes_on(world: Harness) -> None:
    """As Restate 1.7.12 showed it (pause while backing off, then resume): the paused invocation
    keeps retry_count, the cancelled next_retry_at and the last failure, and the resumed one
    counts on from there."""
    world.apply(operate(FLAKY, InvocationOperation.PAUSE, ts=T0 + 100))  # its retry was due at T0 + 520
    assert _retry_columns(world, FLAKY, T0 + 600) == {
        "status": "paused",
        "retry_count": 1,
        "next_retry_at": "2026-11-18T11:06:40.520+00:00",
        "last_failure": FLAKY_FAILURE,
        "last_failure_error_code": "RT0007",
    }
    world.apply(operate(FLAKY, InvocationOperation.RESUME, ts=T0 + 700))
    assert _retry_columns(world, FLAKY, T0 + 800) == {
        "status": "running",
        "retry_count": 2,
        "last_start_at": "2026-11-18T11:06:40.700+00:00",
        "last_failure": FLAKY_FAILURE,  # kept until the next attempt makes progress or fails
        "last_failure_error_code": "RT0007",
    }
    world.apply(attempt(T0 + 900, 4, [], AttemptFailed(code=500, message="again"), inv=FLAKY))
    again = _retry_columns(world, FLAKY, T0 + 950)
    assert (again["status"], again["retry_count"], again["last_failure"]) == (
        "backing-off",
        2,
        "[500 Internal] again",
    )


def test_progress_after_a_failure_clears_the_last_failure(world: Harness) -> None:
    """As measured on Restate 1.7.12 (a handler failing once after a step, then storing another):
    once the retried attempt stores an entry, sys_invocation shows no last failure; the journal
    event stays."""
    progress = AttemptProgress(
        invocation_id=FLAKY,
        attempt=2,
        deployment_id="dp_1",
        protocol_version=6,
        new_entries=[run(1, "step-1")],
    )
    world.apply(Command(timestamp_ms=T0 + 600, body=progress))
    assert _retry_columns(world, FLAKY, T0 + 700) == {
        "status": "running",
        "retry_count": 2,
        "last_start_at": "2026-11-18T11:06:40.520+00:00",
    }
    [event] = query(world, f"SELECT event_type FROM sys_journal_events WHERE id = '{FLAKY}'")
    assert event == {"event_type": "TransientError"}


def test_other_pauses_show_no_retry_columns_and_the_count_starts_again(world: Harness) -> None:
    """A pause of a running attempt (or one by the retry policy) ends Restate's invoker report:
    nothing in the retry columns while paused, and the resumed invocation counts from 1."""
    # FLAKY's retry is due at T0 + 520, so it is running (again) when paused.
    world.apply(operate(FLAKY, InvocationOperation.PAUSE, ts=T0 + 600))
    assert _retry_columns(world, FLAKY, T0 + 650) == {"status": "paused"}
    world.apply(operate(FLAKY, InvocationOperation.RESUME, ts=T0 + 700))
    assert _retry_columns(world, FLAKY, T0 + 750) == {
        "status": "running",
        "retry_count": 1,
        "last_start_at": "2026-11-18T11:06:40.700+00:00",
    }


def test_state_edits_waiting_for_the_lock_are_not_in_sys_inbox(world: Harness) -> None:
    """As Restate's `append_inbox_row` (restate issue 1101) and as measured on Restate 1.7.12: an
    admin state edit queued behind an object's lock is not listed, but it took a sequence number
    (invocation, edit, invocation: 0 and 2 listed); `created_at` is null. An entry keeps its
    number while the ones ahead of it leave."""
    edit = PatchState(service="Counter", key="k1", new_state={"count": b"5"})
    later = inv(8, "k1")
    world.apply(Command(timestamp_ms=T0 + 95, body=edit))
    world.apply(invoke(later, target("Counter", "add", "k1"), T0 + 96))
    assert len(world.store.object("Counter", "k1").pending_state) == 1  # it does wait in line
    sql = "SELECT * FROM sys_inbox ORDER BY sequence_number"
    rows = query(world, sql)
    listed = [(r["id"], r["service_key"], r["sequence_number"]) for r in rows]
    assert listed == [(OBJ_B, "k1", 0), (later, "k1", 2)]
    assert all("created_at" not in r for r in rows)
    world.apply(attempt(T0 + 97, 1, [output(b"1")], Ended(), inv=OBJ_A))  # OBJ_B takes the lock
    assert [(r["id"], r["sequence_number"]) for r in query(world, sql)] == [(later, 2)]


def test_statuses_suspension_inbox_lock_and_schedule(world: Harness) -> None:
    rows = {
        r["id"]: r
        for r in query(
            world,
            "SELECT id, status, suspended_waiting_for_completions, suspended_waiting_for_signals, "
            "suspended_waiting_future_json, inboxed_at, scheduled_at, scheduled_start_at, journal_size, "
            "invoked_by, invoked_by_id, invoked_by_target, invoked_by_service_name FROM sys_invocation",
        )
    }
    assert rows[NAP]["status"] == "suspended"
    assert rows[NAP]["suspended_waiting_for_completions"] == [1]
    assert rows[NAP]["suspended_waiting_for_signals"] == [1]
    assert json.loads(rows[NAP]["suspended_waiting_future_json"]) == {
        "Unknown": [{"Single": {"CompletionId": 1}}, {"Single": {"SignalIndex": 1}}]
    }
    assert rows[OBJ_A]["status"] == "running" and rows[OBJ_B]["status"] == "pending"
    assert rows[OBJ_B]["inboxed_at"] == "2026-11-18T11:06:40.080+00:00" and "journal_size" not in rows[OBJ_B]
    assert rows[LATER]["status"] == "scheduled"
    assert rows[LATER]["scheduled_at"] == "2026-11-18T11:06:40.090+00:00"
    assert rows[LATER]["scheduled_start_at"] == "2026-11-19T11:06:40.000+00:00"
    [child] = [r for r in rows.values() if r["invoked_by"] == "service"]
    assert (child["invoked_by_id"], child["invoked_by_target"], child["invoked_by_service_name"]) == (
        CALLER,
        "Caller/call_greet",
        "Caller",
    )
    assert query(world, "SELECT service_name, service_key, id, sequence_number FROM sys_inbox") == [
        {"service_name": "Counter", "service_key": "k1", "id": OBJ_B, "sequence_number": 0}
    ]
    assert query(world, "SELECT invocation_id FROM sys_keyed_service_status") == [{"invocation_id": OBJ_A}]
    # `restate services status`: grouped by the derived status.
    grouped = query(
        world,
        "SELECT target_service_name, status, COUNT(1) AS n FROM sys_invocation "
        "GROUP BY target_service_name, status ORDER BY target_service_name, status",
    )
    assert {(g["target_service_name"], g["status"]): g["n"] for g in grouped}[("Counter", "pending")] == 1


def test_journal_rows_and_json_as_restate_renders_them(world: Harness) -> None:
    journal = query(world, f"SELECT * FROM sys_journal WHERE id = '{CALLER}' ORDER BY index")
    assert [(j["index"], j["entry_type"], j.get("name")) for j in journal] == [
        (0, "Command: Input", ""),
        (1, "Command: Call", ""),
        (2, "Notification: CallInvocationId", None),
    ]
    note = json.loads(journal[2]["entry_json"])["Notification"]["Completion"]["CallInvocationId"]
    child = note["invocation_id"]
    # Byte for byte what Restate 1.7.12 stores for `ctx.service_call(greet, arg="Dave")`.
    assert journal[1]["entry_json"] == (
        '{"Command":{"Call":{"request":{"invocation_id":"' + child + '","invocation_target":{"Service":'
        '{"name":"Greeter","handler":"greet","scope":null}},"span_context":{"span_context":{"trace_id":'
        '[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"span_id":[0,0,0,0,0,0,0,0],"trace_flags":0,"is_remote":false,'
        '"trace_state":""},"cause":null},"parameter":[34,68,97,118,101,34],"headers":[],'
        '"idempotency_key":null,"completion_retention_duration":{"secs":86400,"nanos":0},'
        '"journal_retention_duration":{"secs":86400,"nanos":0}},"invocation_id_completion_id":1,'
        '"result_completion_id":2,"name":""}}}'
    )
    assert journal[1]["entry_lite_json"] == (
        '{"Command":{"Call":{"invocation_id":"' + child + '","invocation_target":{"Service":{"name":'
        '"Greeter","handler":"greet","scope":null}},"invocation_id_completion_id":1,"result_completion_id":2}}}'
    )
    assert journal[2]["entry_lite_json"] == (
        '{"Notification":{"ty":{"Completion":"CallInvocationId"},"id":{"CompletionId":1},"result":"InvocationId"}}'
    )
    assert journal[0]["raw"] == "72050a03227822" and journal[0]["raw_length"] == 7  # without the header
    assert {j["version"] for j in journal} == {2}
    # v1-only columns stay null, as on Restate for v2 journals.
    assert not any(k in j for j in journal for k in ("completed", "invoked_id", "sleep_wakeup_at"))
    nap_sql = f"SELECT entry_json, entry_lite_json FROM sys_journal WHERE id = '{NAP}' AND index = 1"
    nap = query(world, nap_sql)
    assert nap == [
        {
            "entry_json": '{"Command":{"Sleep":{"wake_up_time":5000,"completion_id":1,"name":""}}}',
            "entry_lite_json": '{"Command":{"Sleep":{"wake_up_time":5000,"completion_id":1}}}',
        }
    ]
    greet = query(world, f"SELECT entry_json FROM sys_journal WHERE id = '{GREET}' ORDER BY index")
    assert [g["entry_json"] for g in greet[1:]] == [
        '{"Command":{"Run":{"completion_id":1,"name":"step-1"}}}',
        '{"Notification":{"Completion":{"Run":{"completion_id":1,"result":{"Success":[54]}}}}}',
        '{"Command":{"Output":{"result":{"Success":[34,104,105,34]},"name":""}}}',
    ]


def test_output_failure_and_completion_failure() -> None:
    sm = Harness()
    failed = inv(9)
    sm.apply(
        invoke(failed, target("Failing", "terminal"), T0),
        attempt(T0 + 3, 1, [output_failure(418, "boom")], Ended(), inv=failed),
    )
    [row] = query(sm, "SELECT status, completion_result, completion_failure FROM sys_invocation")
    assert row == {"status": "completed", "completion_result": "failure", "completion_failure": "[418] boom"}
    [out] = query(sm, "SELECT entry_json, entry_lite_json FROM sys_journal WHERE index = 1")
    assert out["entry_json"] == (
        '{"Command":{"Output":{"result":{"Failure":{"code":418,"message":"boom"}},"name":""}}}'
    )
    assert out["entry_lite_json"] == '{"Command":{"Output":{"result":"Failure"}}}'


def test_a_query_loads_only_the_tables_columns_and_keys_it_reads(world: Harness) -> None:
    ctx = _planner()

    def needs(sql: str) -> dict[str, Any]:
        return {t: (n.columns, n.keys) for t, n in plan_needs(ctx.sql(sql).optimized_logical_plan()).items()}

    assert needs("SELECT 1") == {}
    assert needs("SELECT count(*) FROM sys_journal") == {"sys_journal": (frozenset(), [{}])}
    assert needs("SELECT sj.index, sj.entry_json FROM sys_journal sj WHERE sj.id = 'a' ORDER BY index") == {
        "sys_journal": (frozenset({"id", "index", "entry_json"}), [{"id": frozenset({"a"})}])
    }
    assert needs("SELECT * FROM sys_journal WHERE id IN ('a', 'b') OR id = 'c'")["sys_journal"][1] == [
        {"id": frozenset({"a", "b", "c"})}
    ]
    assert needs("SELECT * FROM sys_journal WHERE id = 'a' OR index = 1")["sys_journal"][1] == [{}]
    kv = needs("select key, value from state where service_name = 'Counter' and service_key = 'k1' ;")
    assert kv["state"][1] == [{"service_name": frozenset({"Counter"}), "service_key": frozenset({"k1"})}]
    listing = needs("SELECT id FROM sys_invocation inv WHERE status != 'completed' LIMIT 100")
    assert set(listing) == {"sys_invocation_status", "sys_invocation_state"}
    assert needs("SELECT * FROM information_schema.columns") == {}
    # Subqueries, joins, the qualified name: every scan is found.
    joined = needs(
        "SELECT inv.id FROM restate.public.sys_invocation inv LEFT JOIN sys_deployment dp "
        "ON dp.id = inv.pinned_deployment_id WHERE inv.target_service_name IN "
        "(SELECT name FROM sys_service WHERE ty = 'virtual_object')"
    )
    assert set(joined) == {"sys_invocation_status", "sys_invocation_state", "sys_deployment", "sys_service"}


def _planner() -> Any:
    from admin_api.introspection.query import _context

    return _context()


def test_state_promises_and_registry_tables() -> None:
    sm = Harness()
    obj = inv(10, "k1")
    set_count = encode_message(
        MessageType.SET_STATE_COMMAND, pb.SetStateCommandMessage(key=b"count", value=pb.Value(content=b"3"))
    )
    sm.apply(
        invoke(obj, target("Counter", "add", "k1"), T0),
        attempt(T0 + 1, 1, [set_count, output(b"3")], Ended(), inv=obj),
    )
    kv_get = "select key, value from state where service_name = 'Counter' and service_key = 'k1' ;"
    assert query(sm, kv_get) == [{"key": "count", "value": "33"}]
    assert query(sm, "select * from state where service_name = 'Other'") == []
    [row] = query(sm, "SELECT * FROM state")
    assert row == {
        "partition_key": partition_key_of("k1"),
        "service_name": "Counter",
        "service_key": "k1",
        "key": "count",
        "key_length": 5,
        "value_utf8": "3",
        "value": "33",
        "value_length": 1,
    }
    assert query(sm, "SELECT count(*) AS n FROM sys_promise") == [{"n": 0}]
    assert query(sm, "SELECT count(*) AS n FROM sys_locks") == [{"n": 0}]
    # An admin edit with a scope (as Restate 1.7.12 shows it: its own rows, the scope's partition key).
    sm.apply(
        Command(
            timestamp_ms=T0 + 2,
            body=PatchState(service="Counter", key="k1", new_state={"count": b"7"}, scope="s1"),
        )
    )
    sql = "select scope, partition_key, value_utf8 from state where service_key = 'k1' order by scope"
    assert query(sm, sql) == [
        {"scope": "s1", "partition_key": partition_key_of("s1"), "value_utf8": "7"},
        {"partition_key": partition_key_of("k1"), "value_utf8": "3"},
    ]


async def test_errors_as_restate_answers_them(client: TestClient) -> None:
    async def ask(sql: str) -> tuple[int, str]:
        r = await client.post("/v4/query", json={"query": sql}, headers={"accept": "application/json"})
        return r.status, (await r.json())["message"]

    assert await ask("SELEC nonsense") == (
        400,
        "Datafusion error: SQL error: "
        'ParserError("Expected: an SQL statement, found: SELEC at Line: 1, Column: 1")',
    )
    assert await ask("SELECT * FROM nope") == (
        500,
        "Datafusion error: Error during planning: table 'restate.public.nope' not found",
    )
    # Restate's catalog is `restate`, its schema `public`: `restate.sys_invocation` is not a table.
    assert (await ask("SELECT count(*) FROM restate.sys_invocation"))[0] == 500
    assert await ask("CREATE VIEW v AS SELECT 1") == (
        400,
        "Datafusion error: Error during planning: DDL not supported: CreateView",
    )
    assert await ask("SELECT 1/0") == (500, "Datafusion error: Arrow error: Divide by zero error")
    # Bodies that do not fit: Restate 1.7.12's answers to the same bytes (measured), in text/plain.
    for raw, message in [
        ("{}", "missing field `query` at line 1 column 2"),
        ('{"query":5}', "query: invalid type: integer `5`, expected a string at line 1 column 10"),
        ('{"query":null}', "query: invalid type: null, expected a string at line 1 column 13"),
    ]:
        r = await client.post("/v4/query", data=raw, headers={"content-type": "application/json"})
        assert (r.status, r.headers["content-type"]) == (422, "text/plain; charset=utf-8")
        assert await r.text() == f"Failed to deserialize the JSON body into the target type: {message}"
    ok = await client.post("/v4/query", json={"query": "SELECT count(*) FROM restate.public.sys_invocation"})
    assert ok.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert pa.ipc.open_stream(await ok.read()).read_all().column(0).to_pylist() == [8]
    # Only exactly `application/json` gets JSON, as on Restate.
    accept = {"accept": "application/json, */*"}
    mixed = await client.post("/v4/query", json={"query": "SELECT 1"}, headers=accept)
    assert mixed.headers["content-type"] == "application/vnd.apache.arrow.stream"


@pytest.fixture
async def client(world: Harness) -> AsyncIterator[TestClient]:
    class View:
        store = world.store
        lock = threading.Lock()

    app = admin_app.create_admin_app(MemoryRegistryStore(), Settings(), changelog=View())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_get_invocations_filters_and_pages(client: TestClient) -> None:
    async def ids(url: str) -> tuple[list[str], str | None]:
        r = await client.get(url)
        assert r.status == 200, await r.text()
        body = await r.json()
        return [i["id"] for i in body["invocations"]], body.get("next_page_token")

    everything, token = await ids("/invocations")
    assert len(everything) == 8 and token is None and everything[:2] == [GREET, FLAKY]
    first, token = await ids("/invocations?limit=3")
    assert first == everything[:3] and token
    second, token2 = await ids(f"/invocations?limit=3&page_token={token}")
    assert second == everything[3:6] and token2
    third, last = await ids(f"/invocations?limit=3&page_token={token2}")
    assert third == everything[6:] and last is None
    assert (await ids("/invocations?service=Counter"))[0] == [OBJ_A, OBJ_B]
    assert (await ids("/invocations?service=Counter&status=pending"))[0] == [OBJ_B]
    active = (await ids("/invocations?status=running,backing-off"))[0]
    assert active[0] == FLAKY and active[2] == OBJ_A and len(active) == 3  # and the caller's child
    assert (await ids("/invocations?key=k1&handler=add"))[0] == [OBJ_A, OBJ_B]
    assert (await ids("/invocations?deployment=dp_1&status=completed"))[0] == [GREET]
    window = "created_after=2026-11-18T11:06:40.065Z&created_before=2026-11-18T11:06:40.075%2B00:00"
    assert (await ids(f"/invocations?{window}"))[0] == [OBJ_A]
    for bad in ("status=sleeping", "limit=0", "limit=x", "page_token=zz", "created_after=yesterday"):
        r = await client.get(f"/invocations?{bad}")
        assert r.status == 400, bad
    flaky = await (await client.get(f"/v4/invocations/{FLAKY}")).json()
    assert flaky == {
        "id": FLAKY,
        "target": "Failing/flaky",
        "target_service_name": "Failing",
        "target_handler_name": "flaky",
        "target_service_key": None,
        "status": flaky["status"],  # backing-off until T0 + 520, running after: depends on the clock
        "created_at": "2026-11-18T11:06:40.010+00:00",
        "modified_at": "2026-11-18T11:06:40.020+00:00",
        "trace_id": "",
        "deployment_id": "dp_1",
        "retry_count": flaky["retry_count"],
        "last_failure": "[500 Internal] RuntimeError('flaky: boom')",
        "next_retry_at": flaky["next_retry_at"],
    }
    assert (await client.get(f"/invocations/{inv(99)}")).status == 404


async def test_version_names_kinvoke(client: TestClient) -> None:
    body = await (await client.get("/version")).json()
    assert body["version"] == "1.7.12" and body["max_admin_api_version"] == 4
    assert isinstance(body["kinvoke_version"], str) and body["kinvoke_version"]


def test_tables_follow_the_changelog_incrementally(world: Harness) -> None:
    live = LiveTables()
    source = Source(world.store, threading.Lock(), live)
    count = "SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'"

    def ask(sql: str) -> list[dict]:
        table = run_query(source, Registry(), sql, now_ms=T0 + 100)
        rows: list[dict] = json.loads(introspection.rows_json(table))["rows"]
        return rows

    assert ask(count) == [{"n": 1}] and live.pending == 0
    before = live.status.batches()
    done = len(world.steps)
    world.apply(attempt(T0 + 200, 2, [output(b'"ok"')], Ended(), inv=FLAKY))
    for step in world.steps[done:]:
        for key, _ in step.writes:
            live.mark(key)
    assert live.pending == 1
    assert ask(count) == [{"n": 2}] and live.pending == 0
    assert live.status.batches()[0] is not before[0]  # its chunk was rebuilt
    # A purged invocation leaves every table.
    live.mark(changelog.status_key(GREET))
    world.store.kv.put(changelog.status_key(GREET), None)
    assert ask(f"SELECT count(*) AS n FROM sys_invocation WHERE id = '{GREET}'") == [{"n": 0}]


def test_keyed_tables_rebuild_only_the_chunk_that_changed() -> None:
    schema = TABLES["sys_keyed_service_status"]
    table = KeyedTable(schema)
    table.CHUNK_KEYS = 10
    for i in range(25):
        table.put(f"k{i}", [(i, "S", f"k{i}", f"inv{i}")])
    first = table.batches()
    assert [b.num_rows for b in first] == [10, 10, 5] and len(table) == 25
    table.put("k12", [(12, "S", "k12", "other")])
    table.put("k3", [])
    second = table.batches()
    assert second[2] is first[2] and second[0] is not first[0] and second[1] is not first[1]
    assert [b.num_rows for b in second] == [9, 10, 5] and len(table) == 24
