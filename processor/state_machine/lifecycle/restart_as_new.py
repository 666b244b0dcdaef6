"""Restart as new (`PATCH /invocations/{id}/restart-as-new[?from=N&deployment=]`): a completed
invocation runs again as a new invocation (the id the admin API chose, on the same partition)
with the same target, input and headers.

As Restate's `OnRestartAsNewInvocationCommand`: only completed invocations (a running one is
409, a scheduled or inboxed one 425), not workflows (422), and the journal must still be there
(410). With `from` > 0 the new journal starts with the old one up to that index (included) plus
the completions of the commands in it. The pin is copied, patched to the deployment asked for
(the admin API's default is the latest). The new invocation is not idempotent and nobody waits
for it; it keeps the original's random seed (Restate 1.7.12 copies it, so a copied prefix that
used the SDK's random replays the same).
"""

from __future__ import annotations

from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import deployment_patch, invoke
from schemas.records import (
    InvocationPhase,
    InvocationStatus,
    InvokedBy,
    InvokedByKind,
    JournalEntry,
    OperateInvocation,
    OperationOutcome,
    ServiceType,
)
from schemas.service_protocol import Frame, ProtocolViolation, decode_message, is_command, is_notification

# Restate copies a journal prefix only for invocations pinned to service protocol V6 or later.
MIN_PROTOCOL_FOR_PREFIX = 6


def apply(ctx: StepContext, status: InvocationStatus, cmd: OperateInvocation) -> OperationOutcome:
    if status.phase in (InvocationPhase.SCHEDULED, InvocationPhase.INBOXED):
        return OperationOutcome.NOT_STARTED
    if status.phase != InvocationPhase.COMPLETED:
        return OperationOutcome.STILL_RUNNING
    old = ctx.journal(status.invocation_id)
    if status.journal_length == 0 or not old:
        return OperationOutcome.MISSING_INPUT
    if status.target.service_ty == ServiceType.WORKFLOW:
        return OperationOutcome.UNSUPPORTED
    upto = cmd.from_entry or 0
    if upto > 0 and (status.protocol_version or 0) < MIN_PROTOCOL_FOR_PREFIX:
        return OperationOutcome.UNSUPPORTED
    chosen = deployment_patch.compatible(status, cmd) if deployment_patch.requested(cmd) else None
    if isinstance(chosen, OperationOutcome):
        return chosen
    if upto >= len(old):
        # Restate's RPC finds the entry missing before its state machine's range check.
        return OperationOutcome.JOURNAL_COPY_RANGE_INVALID
    copied = _prefix(old, upto)
    if copied is None:
        return OperationOutcome.JOURNAL_COPY_RANGE_INVALID
    assert cmd.new_invocation_id is not None, "the admin API names the new invocation"
    new = InvocationStatus(
        invocation_id=cmd.new_invocation_id,
        phase=InvocationPhase.SCHEDULED,  # until `start`: no attempt to notify of copied entries
        target=status.target,
        invoked_by=InvokedBy(kind=InvokedByKind.RESTART_AS_NEW, invocation_id=status.invocation_id),
        created_at_ms=ctx.now_ms,
        modified_at_ms=ctx.now_ms,
        attempt=1,
        options=status.options,
        seed_invocation_id=status.seed_invocation_id or status.invocation_id,
    )
    if status.deployment_id is not None:  # as Restate: the pin is copied (and patched)
        new.deployment_id = chosen or status.deployment_id
        new.protocol_version = status.protocol_version
    for entry in copied:
        ctx.append_entry(new, entry.frame, is_command=is_command(Frame.parse(entry.frame).type))
    invoke.start(ctx, new)
    ctx.txn.put_status(new)
    return OperationOutcome.DONE


def _prefix(journal: list[JournalEntry], upto: int) -> list[JournalEntry] | None:
    """Entries 0..upto, then the later completions of commands among them; None if one of
    those commands was never completed."""
    copied = journal[: upto + 1]
    missing: set[int] = set()
    for entry in copied:
        frame = Frame.parse(entry.frame)
        if is_command(frame.type):
            missing |= _completion_ids(frame)
        elif is_notification(frame.type):
            missing.discard(_completion_of(frame))
    for entry in journal[upto + 1 :]:
        if not missing:
            break
        frame = Frame.parse(entry.frame)
        if is_notification(frame.type) and _completion_of(frame) in missing:
            missing.discard(_completion_of(frame))
            copied.append(entry)
    return None if missing else copied


def _completion_ids(frame: Frame) -> set[int]:
    """The completions a command waits for (`result_completion_id`, a call's
    `invocation_id_notification_idx`)."""
    try:
        msg = decode_message(frame)
    except (ProtocolViolation, KeyError, ValueError):
        return set()  # a custom command: nothing of ours to wait for
    return {
        value
        for field, value in msg.ListFields()
        if field.name == "result_completion_id" or field.name.endswith("notification_idx")
    }


def _completion_of(frame: Frame) -> int:
    note = decode_message(frame)
    return note.completion_id if note.WhichOneof("id") == "completion_id" else -1
