"""Rows of Restate's tables from kinvoke's records, in each table's column order
(`schema.TABLES`). Timestamps and durations are integer milliseconds (Arrow converts them).

Where kinvoke does not have what a column means, the column stays null and a comment says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from sys import intern  # rows stay in memory: one copy of the strings most rows repeat
from typing import Any

from admin_api.introspection.journal_json import (
    COMMAND_TYPES,
    V1_ENTRY_TYPES,
    Callee,
    command_name,
    dumps,
    entry_json,
    entry_lite_json,
    entry_type,
    retentions_ms,
)
from schemas.ids import ALPHABET, U64_CHARS, InvocationId, partition_key_of
from schemas.records import (
    AttemptFailed,
    Failure,
    HandlerType,
    InvocationPhase,
    InvocationStatus,
    InvokedByKind,
    JournalEntry,
    ObjectStatus,
    Promise,
    ServiceType,
    StateEntry,
    Success,
)
from schemas.registry import DeploymentRecord, ServiceRecord
from schemas.service_protocol import Frame

Row = tuple[Any, ...]

# The Restate version kinvoke answers as (admin_api.app.SERVER_VERSION): every invocation is
# created by a server speaking it.
CREATED_USING_RESTATE_VERSION = "1.7.12"
SERVICE_TY = {
    ServiceType.SERVICE: "service",
    ServiceType.VIRTUAL_OBJECT: "virtual_object",
    ServiceType.WORKFLOW: "workflow",
}
REGISTRY_SERVICE_TY = {"Service": "service", "VirtualObject": "virtual_object", "Workflow": "workflow"}
PHASE = {
    InvocationPhase.INBOXED: "inboxed",
    InvocationPhase.SCHEDULED: "scheduled",
    InvocationPhase.INVOKED: "invoked",
    InvocationPhase.SUSPENDED: "suspended",
    InvocationPhase.PAUSED: "paused",
    InvocationPhase.COMPLETED: "completed",
}
INVOKED_BY = {
    InvokedByKind.INGRESS: "ingress",
    InvokedByKind.SERVICE: "service",
    InvokedByKind.SUBSCRIPTION: "subscription",
    InvokedByKind.RESTART_AS_NEW: "restart_as_new",
}
# restate `types/src/errors.rs` codes and their names, as `InvocationError`'s Display shows them.
_CODE_NAMES = {
    400: "Bad request",
    404: "Not found",
    409: "Aborted",
    410: "Gone",
    415: "Unsupported media type",
    470: "Not ready",
    500: "Internal",
    570: "Journal mismatch",
    571: "Protocol violation",
    572: "Awaiting two async results",
    573: "Unsupported feature",
}


_DIGITS = {c: i for i, c in enumerate(ALPHABET)}
_PK_START = len(InvocationId.PREFIX) + 1  # after `inv_1`


def partition_key(invocation_id: str) -> int:
    """`InvocationId.parse(id).partition_key` without decoding the other 22 characters (a third
    of the cost of building a status row); ids the processor stored are well formed."""
    try:
        v = 0
        for c in invocation_id[_PK_START : _PK_START + U64_CHARS]:
            v = v * 62 + _DIGITS[c]
        return int.from_bytes(v.to_bytes(8, "little"), "big")
    except (KeyError, OverflowError):
        return InvocationId.parse(invocation_id).partition_key  # says what is wrong with it


def _needs_lock(status: InvocationStatus) -> bool:
    t = status.target
    return (
        t.service_ty == ServiceType.VIRTUAL_OBJECT
        and t.key is not None
        and t.handler_ty in (HandlerType.EXCLUSIVE, None)
    )


def _ran(status: InvocationStatus) -> bool:
    return status.running_at_ms is not None or status.phase in (
        InvocationPhase.INVOKED,
        InvocationPhase.SUSPENDED,
        InvocationPhase.PAUSED,
    )


def running_at(status: InvocationStatus) -> int | None:
    """When the invocation first became `invoked`. An invocation that needs no object lock starts
    when it is created (or when its delay is over); kinvoke does not record when one leaves an
    object's inbox, so for those it is when the first attempt reported back."""
    if not _ran(status):
        return None
    if not _needs_lock(status):
        return status.execute_at_ms or status.created_at_ms
    return status.running_at_ms if status.running_at_ms is not None else status.modified_at_ms


def pinned(status: InvocationStatus) -> bool:
    """Restate pins the deployment once the deployment stored a journal entry (beyond the input);
    kinvoke records the deployment of every attempt, so an attempt that wrote nothing (it failed
    at once, or still runs) does not pin it."""
    return status.deployment_id is not None and status.journal_length > 1


def completion_failure(result: Failure) -> str:
    return f"[{result.code}] {result.message}"


def status_row(st: InvocationStatus) -> Row:
    """`sys_invocation_status` (restate `invocation_status/row.rs`)."""
    t, by, result = st.target, st.invoked_by, st.result
    phase = st.phase
    completed = phase == InvocationPhase.COMPLETED
    outcome = None
    if completed and result is not None:
        outcome = "failure" if isinstance(result, Failure) else "success"
    with_journal = phase not in (InvocationPhase.SCHEDULED, InvocationPhase.INBOXED)
    suspended = st.waiting if phase == InvocationPhase.SUSPENDED else None
    caller_service = by.target.split("/", 1)[0] if by.kind == InvokedByKind.SERVICE and by.target else None
    return (
        partition_key(st.invocation_id),
        st.invocation_id,
        None,  # vqueue_id: kinvoke has no vqueues
        PHASE[phase],
        outcome,
        completion_failure(result) if completed and isinstance(result, Failure) else None,
        intern(str(t)),
        intern(t.service),
        t.key,
        intern(t.handler),
        SERVICE_TY[t.service_ty],
        None,  # scope: kinvoke has no scoped invocations
        None,  # limit_key: no concurrency rules
        st.idempotency_key,
        INVOKED_BY[by.kind],
        by.invocation_id if by.kind == InvokedByKind.SERVICE else None,
        by.subscription_id if by.kind == InvokedByKind.SUBSCRIPTION else None,
        caller_service,
        by.target if by.kind == InvokedByKind.SERVICE else None,
        by.invocation_id if by.kind == InvokedByKind.RESTART_AS_NEW else None,
        intern(st.deployment_id) if st.deployment_id and pinned(st) else None,
        st.protocol_version if pinned(st) else None,
        None,  # trace_id: kinvoke does no tracing
        st.journal_length if with_journal else None,
        st.commands_count if with_journal else None,
        st.created_at_ms,
        CREATED_USING_RESTATE_VERSION,
        st.modified_at_ms,
        # inboxed_at: known while inboxed (it entered the inbox when it was created or when its
        # delay was over); kinvoke does not keep it once the invocation leaves the inbox.
        (st.execute_at_ms or st.created_at_ms) if phase == InvocationPhase.INBOXED else None,
        st.created_at_ms if st.execute_at_ms is not None else None,  # scheduled_at: the transition
        st.execute_at_ms,  # scheduled_start_at
        running_at(st),
        st.completed_at_ms,
        *retentions_ms(st),  # completion_retention, journal_retention
        list(suspended.waiting_completions) if suspended else None,
        list(suspended.waiting_signals) if suspended else None,
        awaiting_json(st) if suspended else None,
    )


def awaiting_json(st: InvocationStatus) -> str | None:
    """restate's `UnresolvedFuture` of a V5/V6 suspension: any of the awaited notifications."""
    w = st.waiting
    if w is None:
        return None
    futures: list[Any] = [{"Single": {"CompletionId": c}} for c in w.waiting_completions]
    futures += [{"Single": {"SignalIndex": s}} for s in w.waiting_signals]
    futures += [{"Single": {"SignalName": n}} for n in w.waiting_named_signals]
    return dumps({"Unknown": futures}) if futures else None


def failure_text(f: AttemptFailed) -> str:
    """restate's `InvocationError` Display: `[500 Internal] message` and the stack trace."""
    name = _CODE_NAMES.get(f.code)
    text = f"[{f.code} {name}] {f.message}" if name else f"[{f.code}] {f.message}"
    return f"{text}\n{f.stacktrace}" if f.stacktrace else text


def doc_error_code(f: AttemptFailed) -> str | None:
    """restate's doc code for an SDK error (`specialized_restate_error_code_for_invocation_error`).
    kinvoke's own failures (connection errors, refused entries) have no stack trace or related
    command and get none: their Restate codes depend on invoker internals kinvoke does not have."""
    if f.code == 570:
        return "RT0016"
    if f.code == 571:
        return "RT0012"
    from_sdk = bool(f.stacktrace) or f.related_command_index is not None or f.related_command_name
    return "RT0007" if from_sdk else None


@dataclass(frozen=True)
class Invoked:
    """What `sys_invocation_state` needs of an invocation Restate's invoker has a status report
    for; its row depends on the time of the query (a retry that is due is running)."""

    partition_key: int
    invocation_id: str
    retry_count: int
    next_retry_at_ms: int | None
    modified_at_ms: int
    deployment_id: str | None
    server: str | None
    failure: AttemptFailed | None
    paused: bool = False

    @staticmethod
    def reported(st: InvocationStatus) -> bool:
        """Restate's invoker has a status report for an invoked invocation, and keeps it for one
        paused while backing off (the pause drops the retry timer, not the report: its retry
        count, cancelled retry time and last failure stay visible); any other pause, a
        suspension or the end of the invocation ends it."""
        if st.phase == InvocationPhase.INVOKED:
            return True
        return st.phase == InvocationPhase.PAUSED and st.next_retry_at_ms is not None

    @classmethod
    def of(cls, st: InvocationStatus) -> Invoked:
        return cls(
            partition_key(st.invocation_id),
            st.invocation_id,
            st.retry_count,
            st.next_retry_at_ms,
            st.modified_at_ms,
            st.deployment_id,
            st.last_attempt_server,
            # A report has a failure only once one of its own attempts failed (a new report, after
            # a resume that counts from 0, has none yet), and forgets it when an attempt makes
            # progress (Restate's `on_progress_made`; kinvoke: an entry stored since, which also
            # counts a notification delivered while backing off, where Restate keeps it).
            st.last_failure if st.retry_count > 0 and st.retry_count_since_last_stored_entry > 0 else None,
            st.phase == InvocationPhase.PAUSED,
        )

    def in_flight(self, now_ms: int) -> bool:
        """kinvoke's changelog has no attempt starts: an invoked invocation runs unless it waits
        for a retry that is not due yet; a paused one runs nothing."""
        if self.paused:
            return False
        return self.next_retry_at_ms is None or self.next_retry_at_ms <= now_ms

    def row(self, now_ms: int) -> Row:
        """`sys_invocation_state` (restate `invocation_state/row.rs`, protocol V4+ columns)."""
        running = self.in_flight(now_ms)
        f = self.failure
        # last_start_at: a due retry started when it was due; a first attempt (or one after a
        # resume) when the status last changed. While backing off, the failed attempt's start is
        # not recorded by kinvoke: null.
        if running:
            last_start = self.next_retry_at_ms if self.next_retry_at_ms is not None else self.modified_at_ms
        else:
            last_start = None
        related_type = None if f is None or f.related_command_type is None else f.related_command_type
        return (
            self.partition_key,
            self.invocation_id,
            running,
            # Restate counts attempts started since the invocation (re)started: the running one too.
            self.retry_count + (1 if running else 0),
            last_start,
            self.deployment_id,
            self.server,
            None if running else self.next_retry_at_ms,
            failure_text(f) if f else None,
            doc_error_code(f) if f else None,
            f.related_command_index if f else None,
            (f.related_command_name or None) if f else None,
            V1_ENTRY_TYPES.get(related_type) if related_type is not None else None,
            # last_failure_related_entry_*: Restate fills these only for protocol <= V3 journals.
            None,
            None,
            None,
            None,  # last_awaiting_on_future_json: kinvoke does not see what a running SDK awaits
        )


def _transient_error(f: AttemptFailed) -> dict[str, Any]:
    """restate's `TransientErrorEvent` (optional fields left out when unset)."""
    out: dict[str, Any] = {"error_code": f.code, "error_message": f.message}
    if f.stacktrace:
        out["error_stacktrace"] = f.stacktrace
    code = doc_error_code(f)
    if code:
        out["restate_doc_error_code"] = code
    if f.related_command_index is not None:
        out["related_command_index"] = f.related_command_index
    if f.related_command_name:
        out["related_command_name"] = f.related_command_name
    if f.related_command_type in COMMAND_TYPES:
        out["related_command_type"] = COMMAND_TYPES[f.related_command_type]
    return out


def event_rows(st: InvocationStatus) -> list[Row]:
    """`sys_journal_events`: Restate records every distinct transient error (and a pause) as an
    event; kinvoke keeps only the last failure, so at most one event. Its time is the status's
    last change (when the failure was recorded, unless something changed the status since)."""
    f = st.last_failure
    if f is None:
        return []
    if st.phase == InvocationPhase.PAUSED:
        ty, body = "Paused", {"ty": "Paused", "last_failure": _transient_error(f)}
    else:
        ty, body = "TransientError", {"ty": "TransientError", **_transient_error(f)}
    return [
        (
            partition_key(st.invocation_id),
            st.invocation_id,
            max(st.journal_length - 1, 0),
            st.modified_at_ms,
            ty,
            dumps(body),
        )
    ]


def object_rows(obj: ObjectStatus) -> tuple[list[Row], list[Row]]:
    """(`sys_inbox` rows, `sys_keyed_service_status` rows) of one object.

    As Restate's `append_inbox_row`: only invocations are listed, not the admin state edits
    queued behind the lock (`InboxEntry::StateMutation` is skipped, restate issue 1101, though it
    took a sequence number), and `created_at` (deprecated there) stays null. Sequence numbers
    count per object here (per partition in Restate); records older than them get positions."""
    pk = partition_key_of(obj.key)
    numbers = obj.inbox_sequence_numbers
    if len(numbers) != len(obj.inbox):
        numbers = list(range(len(obj.inbox)))
    inbox = [(pk, obj.service, obj.key, inv, seq, None) for inv, seq in zip(obj.inbox, numbers, strict=True)]
    keyed = [(pk, obj.service, obj.key, obj.locked_by)] if obj.locked_by else []
    return inbox, keyed


def state_row(e: StateEntry) -> Row:
    try:
        utf8: str | None = e.value.decode()
    except UnicodeDecodeError:
        utf8 = None
    return (
        partition_key_of(e.scope if e.scope is not None else e.key),
        e.scope,
        e.service,
        e.key,
        e.state_key.decode(errors="replace"),
        len(e.state_key),
        utf8,
        e.value,
        len(e.value),
    )


def promise_row(p: Promise) -> Row:
    ok = p.result.value if isinstance(p.result, Success) else None
    return (
        partition_key_of(p.key),
        None,  # scope
        p.service,
        p.key,
        p.name,
        p.result is not None,
        ok,
        ok.decode(errors="replace") if ok is not None else None,
        completion_failure(p.result) if isinstance(p.result, Failure) else None,
    )


def service_row(s: ServiceRecord) -> Row:
    return (s.name, s.revision, s.public, REGISTRY_SERVICE_TY.get(s.ty, s.ty.lower()), s.deployment_id)


def deployment_row(d: DeploymentRecord) -> Row:
    return (
        d.id,
        "http",
        d.uri,
        d.created_at_ms,
        d.min_protocol_version,
        d.max_protocol_version,
        [r.name for r in d.services],
    )


JOURNAL_JSON_COLUMNS = frozenset({"entry_json", "entry_lite_json"})


def journal_rows(
    invocation_id: str,
    entries: list[JournalEntry],
    callees: dict[int, Callee],
    columns: frozenset[str] | None,
) -> list[Row]:
    """`sys_journal` (restate `journal/row.rs`, journal v2): the columns `completed`,
    `invoked_id`, `invoked_target`, `sleep_wakeup_at` and `promise_name` are v1-only and null, as
    on Restate; `raw` is the message without its frame header. JSON is rendered only when the
    query reads it (`columns`, None for all)."""
    pk = partition_key(invocation_id)
    with_json = columns is None or bool(columns & JOURNAL_JSON_COLUMNS)
    rows: list[Row] = []
    for e in entries:
        frame = Frame.parse(e.frame)
        try:
            name = command_name(frame)
            full = entry_json(frame, callees.get(e.index)) if with_json else None
            lite = entry_lite_json(frame, callees.get(e.index)) if with_json else None
        except Exception:  # noqa: BLE001 - an entry that does not decode still shows as a row
            name, full, lite = None, None, None
        rows.append(
            (
                pk,
                invocation_id,
                e.index,
                entry_type(frame.type),
                name,
                None,
                None,
                None,
                None,
                None,
                frame.payload,
                len(frame.payload),
                2,
                full,
                lite,
                e.appended_at_ms,
            )
        )
    return rows
