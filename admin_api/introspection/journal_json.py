"""Journal entries as Restate 1.7.12 shows them in `sys_journal`: `entry_type`, `name`,
`entry_json` and `entry_lite_json`.

`entry_json` is serde's JSON of restate's `journal_v2::Entry` (externally tagged enums, `Bytes`
as arrays of numbers, `Duration` as `{secs, nanos}`), and `entry_lite_json` that of `EntryLite`:
the CLI deserializes `entry_json` back into `Entry` to show a sleep's wake-up time or a call's
target and id, so the shapes must be exact (checked against a running Restate 1.7.12).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.ids import InvocationId, partition_key_of
from schemas.records import HandlerType, InvocationStatus, InvocationTarget, ServiceType
from schemas.service_protocol import Frame, MessageType, decode_message

Json = dict[str, Any]

COMMAND_TYPES: dict[int, str] = {
    MessageType.INPUT_COMMAND: "Input",
    MessageType.OUTPUT_COMMAND: "Output",
    MessageType.GET_LAZY_STATE_COMMAND: "GetLazyState",
    MessageType.SET_STATE_COMMAND: "SetState",
    MessageType.CLEAR_STATE_COMMAND: "ClearState",
    MessageType.CLEAR_ALL_STATE_COMMAND: "ClearAllState",
    MessageType.GET_LAZY_STATE_KEYS_COMMAND: "GetLazyStateKeys",
    MessageType.GET_EAGER_STATE_COMMAND: "GetEagerState",
    MessageType.GET_EAGER_STATE_KEYS_COMMAND: "GetEagerStateKeys",
    MessageType.GET_PROMISE_COMMAND: "GetPromise",
    MessageType.PEEK_PROMISE_COMMAND: "PeekPromise",
    MessageType.COMPLETE_PROMISE_COMMAND: "CompletePromise",
    MessageType.SLEEP_COMMAND: "Sleep",
    MessageType.CALL_COMMAND: "Call",
    MessageType.ONE_WAY_CALL_COMMAND: "OneWayCall",
    MessageType.SEND_SIGNAL_COMMAND: "SendSignal",
    MessageType.RUN_COMMAND: "Run",
    MessageType.ATTACH_INVOCATION_COMMAND: "AttachInvocation",
    MessageType.GET_INVOCATION_OUTPUT_COMMAND: "GetInvocationOutput",
    MessageType.COMPLETE_AWAKEABLE_COMMAND: "CompleteAwakeable",
}
COMPLETION_TYPES: dict[int, str] = {
    MessageType.GET_LAZY_STATE_COMPLETION_NOTIFICATION: "GetLazyState",
    MessageType.GET_LAZY_STATE_KEYS_COMPLETION_NOTIFICATION: "GetLazyStateKeys",
    MessageType.GET_PROMISE_COMPLETION_NOTIFICATION: "GetPromise",
    MessageType.PEEK_PROMISE_COMPLETION_NOTIFICATION: "PeekPromise",
    MessageType.COMPLETE_PROMISE_COMPLETION_NOTIFICATION: "CompletePromise",
    MessageType.SLEEP_COMPLETION_NOTIFICATION: "Sleep",
    MessageType.CALL_INVOCATION_ID_COMPLETION_NOTIFICATION: "CallInvocationId",
    MessageType.CALL_COMPLETION_NOTIFICATION: "Call",
    MessageType.RUN_COMPLETION_NOTIFICATION: "Run",
    MessageType.ATTACH_INVOCATION_COMPLETION_NOTIFICATION: "AttachInvocation",
    MessageType.GET_INVOCATION_OUTPUT_COMPLETION_NOTIFICATION: "GetInvocationOutput",
}
# restate `invoker-impl/src/error.rs` `best_effort_into_v1`: the command types a failure's related
# command is reported as (v1 entry type names) in `last_failure_related_command_type`.
V1_ENTRY_TYPES: dict[int, str] = {
    MessageType.RUN_COMMAND: "Run",
    MessageType.CALL_COMMAND: "Call",
    MessageType.ONE_WAY_CALL_COMMAND: "OneWayCall",
    MessageType.COMPLETE_AWAKEABLE_COMMAND: "CompleteAwakeable",
    MessageType.SET_STATE_COMMAND: "SetState",
    MessageType.GET_LAZY_STATE_COMMAND: "GetState",
    MessageType.GET_EAGER_STATE_COMMAND: "GetState",
    MessageType.GET_LAZY_STATE_KEYS_COMMAND: "GetStateKeys",
    MessageType.GET_EAGER_STATE_KEYS_COMMAND: "GetStateKeys",
}

# Calls carry the span context Restate stores beside them; kinvoke does no tracing: the empty one.
_EMPTY_SPAN = {
    "span_context": {
        "trace_id": [0] * 16,
        "span_id": [0] * 8,
        "trace_flags": 0,
        "is_remote": False,
        "trace_state": "",
    },
    "cause": None,
}
# Restate's default retentions, which kinvoke's processor applies to invocations without their
# own (processor `lifecycle/retention.py`).
DEFAULT_RETENTION_MS = 24 * 3600 * 1000


def entry_type(ty: int) -> str:
    """`sys_journal.entry_type`: `Command: Run`, `Notification: Call`, `Notification: Signal`."""
    if ty in COMMAND_TYPES:
        return f"Command: {COMMAND_TYPES[ty]}"
    if ty in COMPLETION_TYPES:
        return f"Notification: {COMPLETION_TYPES[ty]}"
    if ty == MessageType.SIGNAL_NOTIFICATION:
        return "Notification: Signal"
    return f"Custom: 0x{ty:04X}"  # custom entries are stored verbatim; Restate has no name for them


def retentions_ms(status: InvocationStatus | None) -> tuple[int, int]:
    """(completion, journal) retention an invocation runs with: its options, else the defaults."""
    options = status.options if status is not None else None
    completion = options.completion_retention_ms if options is not None else None
    journal = options.journal_retention_ms if options is not None else None
    return (
        DEFAULT_RETENTION_MS if completion is None else completion,
        DEFAULT_RETENTION_MS if journal is None else journal,
    )


@dataclass(frozen=True)
class Callee:
    """What a Call/OneWayCall entry alone does not say: the child's id, and its status (target
    and retentions) while the child is still known."""

    invocation_id: str
    status: InvocationStatus | None


CalleeLookup = Callable[[str], InvocationStatus | None]


def dumps(value: Any) -> str:
    """serde_json's compact form (UTF-8 kept, no spaces)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _bytes(b: bytes) -> list[int]:
    return list(b)


def _failure(f: Any) -> Json:
    out: Json = {"code": f.code, "message": f.message}
    if len(f.metadata):
        out["metadata"] = [{"key": m.key, "value": m.value} for m in f.metadata]
    return out


def _headers(headers: Any) -> list[Json]:
    return [{"name": h.key, "value": h.value} for h in headers]


def _key(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def target_json(target: InvocationTarget) -> Json:
    """restate's `InvocationTarget` enum."""
    if target.service_ty == ServiceType.SERVICE or target.key is None:
        return {"Service": {"name": target.service, "handler": target.handler, "scope": None}}
    if target.service_ty == ServiceType.WORKFLOW:
        handler_ty = "Workflow" if target.handler_ty == HandlerType.WORKFLOW else "Shared"
        kind = "Workflow"
    else:
        handler_ty = "Shared" if target.handler_ty == HandlerType.SHARED else "Exclusive"
        kind = "VirtualObject"
    return {
        kind: {
            "name": target.service,
            "key": target.key,
            "handler": target.handler,
            "handler_ty": handler_ty,
            "scope": None,
        }
    }


def _call_target(msg: Any, callee: Callee | None) -> InvocationTarget:
    if callee is not None and callee.status is not None:
        return callee.status.target
    # The callee's record is gone (purged) or unknown: a key means an object.
    keyed = bool(msg.key)
    return InvocationTarget(
        service=msg.service_name,
        handler=msg.handler_name,
        key=msg.key if keyed else None,
        service_ty=ServiceType.VIRTUAL_OBJECT if keyed else ServiceType.SERVICE,
    )


def _duration(ms: int) -> Json:
    """std `Duration` as serde writes it."""
    return {"secs": ms // 1000, "nanos": (ms % 1000) * 1_000_000}


def _call_request(msg: Any, callee: Callee | None, target: InvocationTarget) -> Json:
    completion, journal = retentions_ms(callee.status if callee else None)
    return {
        "invocation_id": callee.invocation_id if callee else "",
        "invocation_target": target_json(target),
        "span_context": _EMPTY_SPAN,
        "parameter": _bytes(msg.parameter),
        "headers": _headers(msg.headers),
        "idempotency_key": msg.idempotency_key if msg.HasField("idempotency_key") else None,
        "completion_retention_duration": _duration(completion),
        "journal_retention_duration": _duration(journal),
    }


def _attach_target(msg: Any) -> Json:
    which = _which(msg, "target")
    if which == "invocation_id":
        return {"InvocationId": msg.invocation_id}
    if which == "idempotent_request_target":
        t = msg.idempotent_request_target
        key = t.service_key if t.HasField("service_key") else None
        pk = InvocationId.for_idempotent_request(t.service_name, key, t.handler_name, t.idempotency_key)
        return {
            "IdempotentRequest": {
                "service_name": t.service_name,
                "service_key": key,
                "service_handler": t.handler_name,
                "idempotency_key": t.idempotency_key,
                "scope": None,
                "partition_key": pk.partition_key,
            }
        }
    t = msg.workflow_target
    return {
        "Workflow": {
            "service_name": t.workflow_name,
            "key": t.workflow_key,
            "partition_key": partition_key_of(t.workflow_key),
            "scope": None,
        }
    }


def _which(msg: Any, oneof: str) -> str | None:
    """The set field of a oneof, None when unset or when the message has no such oneof."""
    return msg.WhichOneof(oneof) if oneof in msg.DESCRIPTOR.oneofs_by_name else None


def _result(msg: Any) -> Any:
    """A `Void | Success(bytes) | Failure` result (the `result` or `completion` oneof)."""
    which = _which(msg, "result") or _which(msg, "completion")
    if which in ("value", "completion_value"):
        return {"Success": _bytes((msg.value if which == "value" else msg.completion_value).content)}
    if which in ("failure", "completion_failure"):
        return {"Failure": _failure(msg.failure if which == "failure" else msg.completion_failure)}
    return "Void"


def _lite_result(msg: Any) -> str:
    which = _which(msg, "result")
    return {"value": "Success", "failure": "Failure"}.get(which or "void", "Void")


def _signal_id(msg: Any) -> Json:
    return {"Name": msg.name} if _which(msg, "signal_id") == "name" else {"Index": msg.idx}


def command_name(frame: Frame) -> str | None:
    """`sys_journal.name`: a command's name ("" when unnamed); None for notifications."""
    if frame.type not in COMMAND_TYPES:
        return None
    msg = decode_message(frame)
    return str(msg.entry_name if frame.type == MessageType.SEND_SIGNAL_COMMAND else msg.name)


def entry_json(frame: Frame, callee: Callee | None = None) -> str | None:
    """serde JSON of restate's `journal_v2::Entry` for this frame (None for custom entries)."""
    body = _entry(frame, callee)
    return None if body is None else dumps(body)


def entry_lite_json(frame: Frame, callee: Callee | None = None) -> str | None:
    body = _entry_lite(frame, callee)
    return None if body is None else dumps(body)


def _entry(frame: Frame, callee: Callee | None) -> Json | None:
    ty = frame.type
    if ty in COMMAND_TYPES:
        return {"Command": {COMMAND_TYPES[ty]: _command(ty, decode_message(frame), callee)}}
    if ty in COMPLETION_TYPES:
        completion = _completion(ty, decode_message(frame))
        return {"Notification": {"Completion": {COMPLETION_TYPES[ty]: completion}}}
    if ty == MessageType.SIGNAL_NOTIFICATION:
        msg = decode_message(frame)
        named = _which(msg, "id") == "signal_name"
        signal = {"Name": msg.signal_name} if named else {"Index": msg.signal_id}
        return {"Notification": {"Signal": {"id": signal, "result": _result(msg)}}}
    return None


def _command(ty: int, msg: Any, callee: Callee | None) -> Json:  # noqa: C901 - one branch per type
    M = MessageType
    if ty == M.INPUT_COMMAND:
        return {"headers": _headers(msg.headers), "payload": _bytes(msg.value.content), "name": msg.name}
    if ty == M.OUTPUT_COMMAND:
        return {"result": _result(msg), "name": msg.name}
    if ty in (M.GET_LAZY_STATE_COMMAND,):
        return {"key": _key(msg.key), "completion_id": msg.result_completion_id, "name": msg.name}
    if ty == M.SET_STATE_COMMAND:
        return {"key": _key(msg.key), "value": _bytes(msg.value.content), "name": msg.name}
    if ty == M.CLEAR_STATE_COMMAND:
        return {"key": _key(msg.key), "name": msg.name}
    if ty == M.CLEAR_ALL_STATE_COMMAND:
        return {"name": msg.name}
    if ty == M.GET_LAZY_STATE_KEYS_COMMAND:
        return {"completion_id": msg.result_completion_id, "name": msg.name}
    if ty == M.GET_EAGER_STATE_COMMAND:
        return {"key": _key(msg.key), "result": _result(msg), "name": msg.name}
    if ty == M.GET_EAGER_STATE_KEYS_COMMAND:
        return {"state_keys": [_key(k) for k in msg.value.keys], "name": msg.name}
    if ty in (M.GET_PROMISE_COMMAND, M.PEEK_PROMISE_COMMAND):
        return {"key": msg.key, "completion_id": msg.result_completion_id, "name": msg.name}
    if ty == M.COMPLETE_PROMISE_COMMAND:
        return {
            "key": msg.key,
            "value": _result(msg),
            "completion_id": msg.result_completion_id,
            "name": msg.name,
        }
    if ty == M.SLEEP_COMMAND:
        return {"wake_up_time": msg.wake_up_time, "completion_id": msg.result_completion_id, "name": msg.name}
    if ty == M.CALL_COMMAND:
        return {
            "request": _call_request(msg, callee, _call_target(msg, callee)),
            "invocation_id_completion_id": msg.invocation_id_notification_idx,
            "result_completion_id": msg.result_completion_id,
            "name": msg.name,
        }
    if ty == M.ONE_WAY_CALL_COMMAND:
        return {
            "request": _call_request(msg, callee, _call_target(msg, callee)),
            "invoke_time": msg.invoke_time,
            "invocation_id_completion_id": msg.invocation_id_notification_idx,
            "name": msg.name,
        }
    if ty == M.SEND_SIGNAL_COMMAND:
        return {
            "target_invocation_id": msg.target_invocation_id,
            "signal_id": _signal_id(msg),
            "result": _result(msg),
            "name": msg.entry_name,
        }
    if ty == M.RUN_COMMAND:
        return {"completion_id": msg.result_completion_id, "name": msg.name}
    if ty in (M.ATTACH_INVOCATION_COMMAND, M.GET_INVOCATION_OUTPUT_COMMAND):
        return {"target": _attach_target(msg), "completion_id": msg.result_completion_id, "name": msg.name}
    # COMPLETE_AWAKEABLE_COMMAND
    return {"id": msg.awakeable_id, "result": _result(msg), "name": msg.name}


def _completion(ty: int, msg: Any) -> Json:
    M = MessageType
    out: Json = {"completion_id": msg.completion_id}
    if ty == M.SLEEP_COMPLETION_NOTIFICATION:
        return out
    if ty == M.CALL_INVOCATION_ID_COMPLETION_NOTIFICATION:
        out["invocation_id"] = msg.invocation_id
        return out
    if ty == M.GET_LAZY_STATE_KEYS_COMPLETION_NOTIFICATION:
        out["state_keys"] = [_key(k) for k in msg.state_keys.keys]
        return out
    out["result"] = _result(msg)
    return out


def _named(body: Json, name: str) -> Json:
    """Lite structs leave an empty name out (`skip_serializing_if = "str::is_empty"`)."""
    if name:
        body["name"] = name
    return body


def _entry_lite(frame: Frame, callee: Callee | None) -> Json | None:  # noqa: C901
    ty, M = frame.type, MessageType
    if ty in COMPLETION_TYPES or ty == MessageType.SIGNAL_NOTIFICATION:
        msg = decode_message(frame)
        which_id = _which(msg, "id")
        note_id: Json = (
            {"SignalName": msg.signal_name}
            if which_id == "signal_name"
            else {"SignalIndex": msg.signal_id}
            if which_id == "signal_id"
            else {"CompletionId": msg.completion_id}
        )
        signal = ty == MessageType.SIGNAL_NOTIFICATION
        kind: Any = "Signal" if signal else {"Completion": COMPLETION_TYPES[ty]}
        which = _which(msg, "result") or "void"
        result = {
            "void": "Void",
            "value": "Success",
            "failure": "Failure",
            "invocation_id": "InvocationId",
            "state_keys": "StateKeys",
        }[which]
        return {"Notification": {"ty": kind, "id": note_id, "result": result}}
    if ty not in COMMAND_TYPES:
        return None
    msg = decode_message(frame)
    body: Json
    if ty in (M.INPUT_COMMAND, M.CLEAR_ALL_STATE_COMMAND, M.GET_EAGER_STATE_KEYS_COMMAND):
        body = {}
    elif ty == M.OUTPUT_COMMAND:
        body = {"result": "Failure" if _which(msg, "result") == "failure" else "Success"}
    elif ty in (M.GET_LAZY_STATE_COMMAND,):
        body = {"key": _key(msg.key), "completion_id": msg.result_completion_id}
    elif ty in (M.SET_STATE_COMMAND, M.CLEAR_STATE_COMMAND):
        body = {"key": _key(msg.key)}
    elif ty == M.GET_LAZY_STATE_KEYS_COMMAND:
        body = {"completion_id": msg.result_completion_id}
    elif ty == M.GET_EAGER_STATE_COMMAND:
        body = {"key": _key(msg.key), "result": "Success" if _which(msg, "result") == "value" else "Void"}
    elif ty in (M.GET_PROMISE_COMMAND, M.PEEK_PROMISE_COMMAND, M.COMPLETE_PROMISE_COMMAND):
        body = {"key": msg.key, "completion_id": msg.result_completion_id}
    elif ty == M.SLEEP_COMMAND:
        body = _named({"wake_up_time": msg.wake_up_time, "completion_id": msg.result_completion_id}, msg.name)
    elif ty == M.CALL_COMMAND:
        body = _named(
            {
                "invocation_id": callee.invocation_id if callee else "",
                "invocation_target": target_json(_call_target(msg, callee)),
                "invocation_id_completion_id": msg.invocation_id_notification_idx,
                "result_completion_id": msg.result_completion_id,
            },
            msg.name,
        )
    elif ty == M.ONE_WAY_CALL_COMMAND:
        body = _named(
            {
                "invocation_id": callee.invocation_id if callee else "",
                "invocation_target": target_json(_call_target(msg, callee)),
                "invoke_time": msg.invoke_time,
                "invocation_id_completion_id": msg.invocation_id_notification_idx,
            },
            msg.name,
        )
    elif ty == M.SEND_SIGNAL_COMMAND:
        body = {
            "target_invocation_id": msg.target_invocation_id,
            "signal_id": _signal_id(msg),
            "result": _lite_result(msg),
        }
    elif ty == M.RUN_COMMAND:
        body = _named({"completion_id": msg.result_completion_id}, msg.name)
    elif ty in (M.ATTACH_INVOCATION_COMMAND, M.GET_INVOCATION_OUTPUT_COMMAND):
        body = {"target": _attach_target(msg), "completion_id": msg.result_completion_id}
    else:  # COMPLETE_AWAKEABLE_COMMAND
        failed = _which(msg, "result") == "failure"
        body = {"id": msg.awakeable_id, "result": "Failure" if failed else "Success"}
    return {"Command": {COMMAND_TYPES[ty]: body}}


def callees(frames: list[tuple[int, Frame]], lookup: CalleeLookup) -> dict[int, Callee]:
    """Journal index of each Call/OneWayCall -> its child (id from the CallInvocationId
    notification the state machine appends, target from the child's status via `lookup`)."""
    ids: dict[int, str] = {}
    for _, frame in frames:
        if frame.type == MessageType.CALL_INVOCATION_ID_COMPLETION_NOTIFICATION:
            note = decode_message(frame)
            ids[note.completion_id] = note.invocation_id
    out: dict[int, Callee] = {}
    for index, frame in frames:
        if frame.type in (MessageType.CALL_COMMAND, MessageType.ONE_WAY_CALL_COMMAND):
            child = ids.get(decode_message(frame).invocation_id_notification_idx)
            if child is not None:
                out[index] = Callee(child, lookup(child))
    return out
