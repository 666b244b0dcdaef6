"""Restate 1.7.12's SQL tables: names, column order and Arrow types, as `information_schema`
shows them on Restate (catalog `restate`, schema `public`), so the CLI and other clients that
check columns or read Arrow streams see the same shapes.

Column order and types follow restate `crates/storage-query-datafusion/src/*/schema.rs`; the
`sys_invocation` view is Restate's own SQL (`context.rs`).
"""

from __future__ import annotations

import pyarrow as pa

CATALOG = "restate"
SCHEMA = "public"

STR = pa.large_string()
BIN = pa.large_binary()
U64 = pa.uint64()
U32 = pa.uint32()
BOOL = pa.bool_()
TS = pa.timestamp("ms", tz="+00:00")
DUR = pa.duration("ms")
U32_LIST = pa.list_(pa.field("item", U32))
STR_LIST = pa.list_(pa.field("item", STR))


def _schema(*columns: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, ty, nullable=True) for name, ty in columns])


TABLES: dict[str, pa.Schema] = {
    "sys_invocation_status": _schema(
        ("partition_key", U64), ("id", STR), ("vqueue_id", STR), ("status", STR),
        ("completion_result", STR), ("completion_failure", STR), ("target", STR),
        ("target_service_name", STR), ("target_service_key", STR), ("target_handler_name", STR),
        ("target_service_ty", STR), ("scope", STR), ("limit_key", STR), ("idempotency_key", STR),
        ("invoked_by", STR), ("invoked_by_id", STR), ("invoked_by_subscription_id", STR),
        ("invoked_by_service_name", STR), ("invoked_by_target", STR), ("restarted_from", STR),
        ("pinned_deployment_id", STR), ("pinned_service_protocol_version", U32), ("trace_id", STR),
        ("journal_size", U32), ("journal_commands_size", U32), ("created_at", TS),
        ("created_using_restate_version", STR), ("modified_at", TS), ("inboxed_at", TS),
        ("scheduled_at", TS), ("scheduled_start_at", TS), ("running_at", TS), ("completed_at", TS),
        ("completion_retention", DUR), ("journal_retention", DUR),
        ("suspended_waiting_for_completions", U32_LIST), ("suspended_waiting_for_signals", U32_LIST),
        ("suspended_waiting_future_json", STR),
    ),
    "sys_invocation_state": _schema(
        ("partition_key", U64), ("id", STR), ("in_flight", BOOL), ("retry_count", U64),
        ("last_start_at", TS), ("last_attempt_deployment_id", STR), ("last_attempt_server", STR),
        ("next_retry_at", TS), ("last_failure", STR), ("last_failure_error_code", STR),
        ("last_failure_related_command_index", U64), ("last_failure_related_command_name", STR),
        ("last_failure_related_command_type", STR), ("last_failure_related_entry_index", U64),
        ("last_failure_related_entry_name", STR), ("last_failure_related_entry_type", STR),
        ("last_awaiting_on_future_json", STR),
    ),
    "sys_journal": _schema(
        ("partition_key", U64), ("id", STR), ("index", U32), ("entry_type", STR), ("name", STR),
        ("completed", BOOL), ("invoked_id", STR), ("invoked_target", STR), ("sleep_wakeup_at", TS),
        ("promise_name", STR), ("raw", BIN), ("raw_length", U64), ("version", U32), ("entry_json", STR),
        ("entry_lite_json", STR), ("appended_at", TS),
    ),
    "sys_journal_events": _schema(
        ("partition_key", U64), ("id", STR), ("after_journal_entry_index", U32), ("appended_at", TS),
        ("event_type", STR), ("event_json", STR),
    ),
    "state": _schema(
        ("partition_key", U64), ("scope", STR), ("service_name", STR), ("service_key", STR), ("key", STR),
        ("key_length", U64), ("value_utf8", STR), ("value", BIN), ("value_length", U64),
    ),
    "sys_inbox": _schema(
        ("partition_key", U64), ("service_name", STR), ("service_key", STR), ("id", STR),
        ("sequence_number", U64), ("created_at", TS),
    ),
    "sys_keyed_service_status": _schema(
        ("partition_key", U64), ("service_name", STR), ("service_key", STR), ("invocation_id", STR),
    ),
    "sys_locks": _schema(
        ("partition_key", U64), ("scope", STR), ("lock_name", STR), ("acquired_at", TS),
        ("acquired_by", STR),
    ),
    "sys_promise": _schema(
        ("partition_key", U64), ("scope", STR), ("service_name", STR), ("service_key", STR), ("key", STR),
        ("completed", BOOL), ("completion_success_value", BIN), ("completion_success_value_utf8", STR),
        ("completion_failure", STR),
    ),
    "sys_service": _schema(
        ("name", STR), ("revision", U64), ("public", BOOL), ("ty", STR), ("deployment_id", STR),
    ),
    "sys_deployment": _schema(
        ("id", STR), ("ty", STR), ("endpoint", STR), ("created_at", TS),
        ("min_service_protocol_version", U32), ("max_service_protocol_version", U32),
        ("services", STR_LIST),
    ),
    "sys_rules": _schema(
        ("pattern", STR), ("concurrency", U32), ("description", STR), ("disabled", BOOL), ("version", U32),
        ("last_modified", TS),
    ),
    "sys_scheduler": _schema(
        ("partition_key", U64), ("id", STR), ("num_inbox", U64), ("status", STR), ("head_entry_id", STR),
        ("scheduled_at", TS), ("blocked_on", STR), ("blocked_on_json", STR),
        ("invoker_concurrency_block_duration", DUR), ("throttling_rules_block_duration", DUR),
        ("invoker_throttling_block_duration", DUR), ("invoker_memory_block_duration", DUR),
        ("concurrency_rules_block_duration", DUR), ("lock_block_duration", DUR),
        ("deployment_concurrency_block_duration", DUR),
    ),
    "sys_user_limits": _schema(
        ("partition_key", U64), ("scope", STR), ("l1", STR), ("l2", STR), ("level", STR), ("usage", U32),
        ("concurrency_limit", U32), ("rule_pattern", STR), ("available", U32), ("num_waiters", U64),
    ),
    "sys_vqueue_entry_status": _schema(
        ("partition_key", U64), ("entry_id", STR), ("vqueue_id", STR), ("stage", STR), ("status", STR),
        ("has_lock", BOOL), ("next_at", TS), ("sequence_number", U64), ("entry_kind", STR),
        ("created_at", TS), ("transitioned_at", TS), ("num_attempts", U32), ("num_errors", U32),
        ("num_pauses", U32), ("num_suspensions", U32), ("num_yields", U32), ("first_attempt_at", TS),
        ("latest_attempt_at", TS), ("first_runnable_at", TS), ("deployment", STR), ("needed_memory", U64),
        ("retry_attempts", U32), ("retry_count_since_last_stored_command", U32),
        ("latest_attempt_blocked_on_invoker_concurrency", DUR),
        ("latest_attempt_blocked_on_throttling_rules", DUR),
        ("latest_attempt_blocked_on_invoker_throttling", DUR),
        ("latest_attempt_blocked_on_invoker_memory", DUR),
        ("latest_attempt_blocked_on_concurrency_rules", DUR), ("latest_attempt_blocked_on_lock", DUR),
        ("latest_attempt_blocked_on_deployment_concurrency", DUR),
        ("total_blocked_on_invoker_concurrency", DUR), ("total_blocked_on_throttling_rules", DUR),
        ("total_blocked_on_invoker_throttling", DUR), ("total_blocked_on_invoker_memory", DUR),
        ("total_blocked_on_concurrency_rules", DUR), ("total_blocked_on_lock", DUR),
        ("total_blocked_on_deployment_concurrency", DUR),
    ),
    "sys_vqueue_meta": _schema(
        ("partition_key", U64), ("id", STR), ("is_active", BOOL), ("queue_is_paused", BOOL),
        ("service_name", STR), ("scope", STR), ("limit_key", STR), ("lock_name", STR), ("created_at", TS),
        ("last_enqueued_at", TS), ("last_start_at", TS), ("last_attempt_at", TS), ("last_finish_at", TS),
        ("avg_queue_duration", DUR), ("avg_inbox_duration", DUR), ("avg_run_duration", DUR),
        ("avg_suspension_duration", DUR), ("avg_end_to_end_duration", DUR),
        ("avg_blocked_on_concurrency_rules", DUR), ("avg_blocked_on_invoker_concurrency", DUR),
        ("avg_blocked_on_invoker_throttling", DUR), ("avg_blocked_on_lock", DUR), ("num_inbox", U64),
        ("num_running", U64), ("num_suspended", U64), ("num_paused", U64), ("num_finished", U64),
    ),
    "sys_vqueues": _schema(
        ("partition_key", U64), ("id", STR), ("stage", STR), ("status", STR), ("has_lock", BOOL),
        ("run_at", TS), ("sequence_number", U64), ("entry_id", STR), ("entry_kind", STR),
        ("created_at", TS), ("transitioned_at", TS), ("num_attempts", U32), ("num_errors", U32),
        ("num_pauses", U32), ("num_suspensions", U32), ("num_yields", U32), ("first_attempt_at", TS),
        ("latest_attempt_at", TS), ("first_runnable_at", TS), ("deployment", STR),
    ),
}

SYS_INVOCATION = "sys_invocation"

# Restate's view (`crates/storage-query-datafusion/src/context.rs`), unchanged: the derived
# `status` depends on `sys_invocation_state.in_flight`.
SYS_INVOCATION_VIEW = """CREATE VIEW sys_invocation as SELECT
            ss.id,
            ss.vqueue_id,
            ss.target,
            ss.target_service_name,
            ss.target_service_key,
            ss.target_handler_name,
            ss.target_service_ty,
            ss.scope,
            ss.limit_key,
            ss.idempotency_key,
            ss.invoked_by,
            ss.invoked_by_service_name,
            ss.invoked_by_id,
            ss.invoked_by_subscription_id,
            ss.invoked_by_target,
            ss.restarted_from,
            ss.pinned_deployment_id,
            ss.pinned_service_protocol_version,
            ss.trace_id,
            ss.journal_size,
            ss.journal_commands_size,
            ss.created_at,
            ss.created_using_restate_version,
            ss.modified_at,
            ss.inboxed_at,
            ss.scheduled_at,
            ss.scheduled_start_at,
            ss.running_at,
            ss.completed_at,
            ss.completion_retention,
            ss.journal_retention,
            ss.suspended_waiting_for_completions,
            ss.suspended_waiting_for_signals,
            ss.suspended_waiting_future_json,

            sis.retry_count,
            sis.last_start_at,
            sis.next_retry_at,
            sis.last_attempt_deployment_id,
            sis.last_attempt_server,
            sis.last_failure,
            sis.last_failure_error_code,
            sis.last_failure_related_entry_index,
            sis.last_failure_related_entry_name,
            sis.last_failure_related_entry_type,
            sis.last_failure_related_command_index,
            sis.last_failure_related_command_name,
            sis.last_failure_related_command_type,
            sis.last_awaiting_on_future_json,

            arrow_cast(CASE
                WHEN ss.status = 'inboxed' THEN 'pending'
                WHEN ss.status = 'scheduled' THEN 'scheduled'
                WHEN ss.status = 'completed' THEN 'completed'
                WHEN ss.status = 'suspended' THEN 'suspended'
                WHEN ss.status = 'paused' THEN 'paused'
                WHEN sis.in_flight THEN 'running'
                WHEN ss.status = 'invoked' AND retry_count > 0 THEN 'backing-off'
                ELSE 'ready'
            END, 'LargeUtf8') AS status,
            ss.completion_result,
            ss.completion_failure
        FROM sys_invocation_state sis
        RIGHT JOIN sys_invocation_status ss ON ss.id = sis.id"""


def column_index(table: str) -> dict[str, int]:
    """Column name -> position in the table's schema."""
    return {name: i for i, name in enumerate(TABLES[table].names)}
