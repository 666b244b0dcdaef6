"""Journal entries as `sys_journal` shows them: each expected string is what Restate 1.7.12
stored for the same SDK call (Python SDK 1.3.0, protocol V6)."""

from __future__ import annotations

import pytest

from admin_api.introspection import journal_json
from admin_api.introspection.journal_json import Callee, entry_json, entry_lite_json, entry_type
from admin_api.introspection.rows import failure_text
from schemas.records import (
    AttemptFailed,
    HandlerType,
    InvocationOptions,
    InvocationPhase,
    InvocationStatus,
    InvocationTarget,
    InvokedBy,
    InvokedByKind,
    ServiceType,
)
from schemas.service_protocol import Frame, MessageType, encode_message, notification
from schemas.service_protocol import protocol_pb2 as pb

CHILD = "inv_1ceQMii6q8iL4msK7GNzkBg2I17ZVehwiJ"
SPAN = (
    '"span_context":{"span_context":{"trace_id":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],'
    '"span_id":[0,0,0,0,0,0,0,0],"trace_flags":0,"is_remote":false,"trace_state":""},"cause":null}'
)


def frame(ty: int, msg: object) -> Frame:
    return Frame.parse(encode_message(ty, msg))  # type: ignore[arg-type]


def note(ty: int, **kw: object) -> Frame:
    return Frame.parse(notification(ty, **kw))  # type: ignore[arg-type]


def child_status(target: InvocationTarget, options: InvocationOptions | None = None) -> InvocationStatus:
    return InvocationStatus(
        invocation_id=CHILD,
        phase=InvocationPhase.COMPLETED,
        target=target,
        invoked_by=InvokedBy(kind=InvokedByKind.SERVICE),
        created_at_ms=1,
        modified_at_ms=1,
        options=options,
    )


COUNTER_ADD = InvocationTarget(
    service="Counter",
    handler="add",
    key="k3",
    service_ty=ServiceType.VIRTUAL_OBJECT,
    handler_ty=HandlerType.EXCLUSIVE,
)

CASES = [
    (
        frame(
            MessageType.GET_EAGER_STATE_COMMAND,
            pb.GetEagerStateCommandMessage(key=b"count", void=pb.Void()),
        ),
        "Command: GetEagerState",
        '{"Command":{"GetEagerState":{"key":"count","result":"Void","name":""}}}',
        '{"Command":{"GetEagerState":{"key":"count","result":"Void"}}}',
    ),
    (
        frame(
            MessageType.SET_STATE_COMMAND,
            pb.SetStateCommandMessage(key=b"count", value=pb.Value(content=b"3")),
        ),
        "Command: SetState",
        '{"Command":{"SetState":{"key":"count","value":[51],"name":""}}}',
        '{"Command":{"SetState":{"key":"count"}}}',
    ),
    (
        frame(
            MessageType.GET_PROMISE_COMMAND,
            pb.GetPromiseCommandMessage(key="confirmation", result_completion_id=1),
        ),
        "Command: GetPromise",
        '{"Command":{"GetPromise":{"key":"confirmation","completion_id":1,"name":""}}}',
        '{"Command":{"GetPromise":{"key":"confirmation","completion_id":1}}}',
    ),
    (
        note(MessageType.GET_PROMISE_COMPLETION_NOTIFICATION, completion_id=1, value=b'"code1"'),
        "Notification: GetPromise",
        '{"Notification":{"Completion":{"GetPromise":{"completion_id":1,"result":{"Success":[34,99,111,100,101,49,34]}}}}}',
        '{"Notification":{"ty":{"Completion":"GetPromise"},"id":{"CompletionId":1},"result":"Success"}}',
    ),
    (
        frame(
            MessageType.COMPLETE_PROMISE_COMMAND,
            pb.CompletePromiseCommandMessage(
                key="confirmation", completion_value=pb.Value(content=b'"code1"'), result_completion_id=1
            ),
        ),
        "Command: CompletePromise",
        '{"Command":{"CompletePromise":{"key":"confirmation","value":{"Success":[34,99,111,100,101,49,34]},'
        '"completion_id":1,"name":""}}}',
        '{"Command":{"CompletePromise":{"key":"confirmation","completion_id":1}}}',
    ),
    (
        note(MessageType.COMPLETE_PROMISE_COMPLETION_NOTIFICATION, completion_id=1),
        "Notification: CompletePromise",
        '{"Notification":{"Completion":{"CompletePromise":{"completion_id":1,"result":"Void"}}}}',
        '{"Notification":{"ty":{"Completion":"CompletePromise"},"id":{"CompletionId":1},"result":"Void"}}',
    ),
    (
        note(MessageType.SLEEP_COMPLETION_NOTIFICATION, completion_id=1),
        "Notification: Sleep",
        '{"Notification":{"Completion":{"Sleep":{"completion_id":1}}}}',
        '{"Notification":{"ty":{"Completion":"Sleep"},"id":{"CompletionId":1},"result":"Void"}}',
    ),
    (
        note(MessageType.CALL_COMPLETION_NOTIFICATION, completion_id=2, value=b"1"),
        "Notification: Call",
        '{"Notification":{"Completion":{"Call":{"completion_id":2,"result":{"Success":[49]}}}}}',
        '{"Notification":{"ty":{"Completion":"Call"},"id":{"CompletionId":2},"result":"Success"}}',
    ),
    (
        note(MessageType.SIGNAL_NOTIFICATION, signal_id=1),
        "Notification: Signal",
        '{"Notification":{"Signal":{"id":{"Index":1},"result":"Void"}}}',
        '{"Notification":{"ty":"Signal","id":{"SignalIndex":1},"result":"Void"}}',
    ),
    (
        note(MessageType.SIGNAL_NOTIFICATION, signal_id=17, failure=(409, "no")),
        "Notification: Signal",
        '{"Notification":{"Signal":{"id":{"Index":17},"result":{"Failure":{"code":409,"message":"no"}}}}}',
        '{"Notification":{"ty":"Signal","id":{"SignalIndex":17},"result":"Failure"}}',
    ),
    (
        frame(
            MessageType.SEND_SIGNAL_COMMAND,
            pb.SendSignalCommandMessage(target_invocation_id=CHILD, idx=1, void=pb.Void()),
        ),
        "Command: SendSignal",
        '{"Command":{"SendSignal":{"target_invocation_id":"' + CHILD + '","signal_id":{"Index":1},'
        '"result":"Void","name":""}}}',
        '{"Command":{"SendSignal":{"target_invocation_id":"' + CHILD + '","signal_id":{"Index":1},'
        '"result":"Void"}}}',
    ),
    (
        frame(
            MessageType.ATTACH_INVOCATION_COMMAND,
            pb.AttachInvocationCommandMessage(invocation_id=CHILD, result_completion_id=3),
        ),
        "Command: AttachInvocation",
        '{"Command":{"AttachInvocation":{"target":{"InvocationId":"' + CHILD + '"},"completion_id":3,'
        '"name":""}}}',
        '{"Command":{"AttachInvocation":{"target":{"InvocationId":"' + CHILD + '"},"completion_id":3}}}',
    ),
]


@pytest.mark.parametrize(("f", "ty", "full", "lite"), CASES, ids=[c[1] for c in CASES])
def test_entries_render_as_restate_stores_them(f: Frame, ty: str, full: str, lite: str) -> None:
    assert entry_type(f.type) == ty
    assert entry_json(f) == full
    assert entry_lite_json(f) == lite


def test_a_send_names_its_child_and_target() -> None:
    send = frame(
        MessageType.ONE_WAY_CALL_COMMAND,
        pb.OneWayCallCommandMessage(
            service_name="Counter",
            handler_name="add",
            key="k3",
            parameter=b"1",
            invocation_id_notification_idx=1,
        ),
    )
    callee = Callee(CHILD, child_status(COUNTER_ADD))
    assert entry_json(send, callee) == (
        '{"Command":{"OneWayCall":{"request":{"invocation_id":"' + CHILD + '","invocation_target":'
        '{"VirtualObject":{"name":"Counter","key":"k3","handler":"add","handler_ty":"Exclusive","scope":null}},'
        + SPAN
        + ',"parameter":[49],"headers":[],"idempotency_key":null,'
        '"completion_retention_duration":{"secs":86400,"nanos":0},'
        '"journal_retention_duration":{"secs":86400,"nanos":0}},'
        '"invoke_time":0,"invocation_id_completion_id":1,"name":""}}}'
    )
    assert entry_lite_json(send, callee) == (
        '{"Command":{"OneWayCall":{"invocation_id":"' + CHILD + '","invocation_target":{"VirtualObject":'
        '{"name":"Counter","key":"k3","handler":"add","handler_ty":"Exclusive","scope":null}},'
        '"invoke_time":0,"invocation_id_completion_id":1}}}'
    )
    # The child's own retentions, as Restate's call request carries them.
    short = Callee(CHILD, child_status(COUNTER_ADD, InvocationOptions(journal_retention_ms=1500)))
    assert '"journal_retention_duration":{"secs":1,"nanos":500000000}' in (entry_json(send, short) or "")
    # Purged child: its target from the entry itself.
    assert '"VirtualObject":{"name":"Counter","key":"k3","handler":"add"' in (
        entry_json(send, Callee(CHILD, None)) or ""
    )


def test_children_are_found_by_their_call_invocation_id_notification() -> None:
    call = frame(
        MessageType.CALL_COMMAND,
        pb.CallCommandMessage(
            service_name="Greeter",
            handler_name="greet",
            invocation_id_notification_idx=1,
            result_completion_id=2,
        ),
    )
    child = note(MessageType.CALL_INVOCATION_ID_COMPLETION_NOTIFICATION, completion_id=1, invocation_id=CHILD)
    seen: list[str] = []

    def lookup(inv: str) -> InvocationStatus | None:
        seen.append(inv)
        return None

    assert journal_json.callees([(1, call), (2, child)], lookup) == {1: Callee(CHILD, None)}
    assert seen == [CHILD]
    assert journal_json.command_name(call) == "" and journal_json.command_name(child) is None


def test_last_failure_text_is_restates_invocation_error() -> None:
    with_stack = AttemptFailed(code=500, message="boom", stacktrace="at x")
    assert failure_text(with_stack) == "[500 Internal] boom\nat x"
    assert failure_text(AttemptFailed(code=570, message="mismatch")) == "[570 Journal mismatch] mismatch"
    assert failure_text(AttemptFailed(code=599, message="odd")) == "[599] odd"
