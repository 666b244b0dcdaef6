"""The callees an invocation is still waiting for: what a kill takes down with it.

As Restate's kill (`kill_child_invocations`): every child started by a Call whose result has not
come back yet is killed too, recursively (each child kills its own); one-way sends are left
alone. The child ids are in the journal (CallInvocationId notifications), so this stays a pure
reading of the journal.
"""

from __future__ import annotations

from processor.state_machine.actions import ProduceCommand
from processor.state_machine.context import StepContext
from schemas.ids import InvocationId
from schemas.records import Command, InvocationStatus, JournalEntry, ManageInvocation, ManageOperation
from schemas.service_protocol import Frame, MessageType, decode_message


def running_callees(entries: list[JournalEntry]) -> list[str]:
    """Ids of the children started by a Call whose CallCompletion is not in the journal."""
    result_of: dict[int, int] = {}  # the call's invocation-id notification -> its result completion
    child_of: dict[int, str] = {}  # invocation-id notification -> child id
    completed: set[int] = set()
    for entry in entries:
        frame = Frame.parse(entry.frame)
        if frame.type == MessageType.CALL_COMMAND:
            call = decode_message(frame)
            result_of[call.invocation_id_notification_idx] = call.result_completion_id
        elif frame.type == MessageType.CALL_INVOCATION_ID_COMPLETION_NOTIFICATION:
            note = decode_message(frame)
            child_of[note.completion_id] = note.invocation_id
        elif frame.type == MessageType.CALL_COMPLETION_NOTIFICATION:
            completed.add(decode_message(frame).completion_id)
    return [child for idx, child in child_of.items() if idx in result_of and result_of[idx] not in completed]


def kill_callees(ctx: StepContext, status: InvocationStatus) -> None:
    """Send a kill to each child the invocation still waits for (on the child's partition)."""
    for child in running_callees(ctx.journal(status.invocation_id)):
        kill = ManageInvocation(invocation_id=child, operation=ManageOperation.KILL)
        pk = InvocationId.parse(child).partition_key
        ctx.emit(ProduceCommand(pk, Command(timestamp_ms=ctx.now_ms, body=kill)))
