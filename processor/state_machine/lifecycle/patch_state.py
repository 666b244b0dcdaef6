"""Admin state edits (`POST /services/{service}/state`, the CLI's `kv edit/patch/clear`).

As in Restate, an edit replaces the object's whole state, and it waits its turn: while an
invocation holds the object's lock it is queued behind that invocation and the ones already in
the inbox (`ObjectStatus.pending_state`, `ahead` counting the inbox entries before it). An edit
carrying a version is applied only while the current state hashes to that version (Restate's
`StateMutationVersion`, which the CLI computes from the state it read); otherwise it is dropped,
as Restate drops it: the admin API has answered 202 long before.

An edit with a `scope` is of Restate's scoped instance: state of its own (next to the unscoped
object's, on the scope's partition). Nothing else can reach a scoped instance in kinvoke (as in
Restate without vqueues, no invocation runs on one), so no lock can hold the edit back.
"""

from __future__ import annotations

import base64
import hashlib

from processor.state_machine.context import StepContext
from schemas.records import ObjectStatus, PatchState, PendingStateEdit


def state_version(state: dict[bytes, bytes]) -> str:
    """Restate's `StateMutationVersion::from_user_state`: SHA-256 over the entries sorted by key
    (index as 8 bytes big-endian, 0x01, key, 0x02, value, 0x03), URL-safe base64 unpadded."""
    digest = hashlib.sha256()
    for i, (key, value) in enumerate(sorted(state.items())):
        digest.update(i.to_bytes(8, "big") + b"\x01" + key + b"\x02" + value + b"\x03")
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def apply(ctx: StepContext, cmd: PatchState) -> None:
    if cmd.scope is not None:
        _replace_scoped_state(ctx, cmd)
        return
    obj = ctx.txn.store.object(cmd.service, cmd.key)
    edit = PendingStateEdit(ahead=len(obj.inbox), version=cmd.version, new_state=cmd.new_state)
    if obj.locked_by is None:
        _replace_state(ctx, obj, edit)
        return
    obj.pending_state.append(edit)
    obj.next_inbox_sequence_number += 1  # Restate's inbox counter numbers a queued edit too
    ctx.txn.put_object(obj)


def apply_due(ctx: StepContext, obj: ObjectStatus) -> None:
    """Apply the queued edits that are next in line (caller: the lock was just released)."""
    due = [edit for edit in obj.pending_state if edit.ahead <= 0]
    obj.pending_state = [edit for edit in obj.pending_state if edit.ahead > 0]
    for edit in due:
        _replace_state(ctx, obj, edit)


def left_inbox(obj: ObjectStatus, position: int) -> None:
    """The inbox entry at `position` left the inbox: edits queued behind it move up by one."""
    for edit in obj.pending_state:
        if edit.ahead > position:
            edit.ahead -= 1


def _replace_state(ctx: StepContext, obj: ObjectStatus, edit: PendingStateEdit) -> None:
    _replace(ctx, obj.service, obj.key, None, edit.version, edit.new_state)


def _replace_scoped_state(ctx: StepContext, cmd: PatchState) -> None:
    _replace(ctx, cmd.service, cmd.key, cmd.scope, cmd.version, cmd.new_state)


def _replace(
    ctx: StepContext, service: str, key: str, scope: str | None, version: str | None, state: dict[str, bytes]
) -> None:
    current = ctx.txn.store.state_of(service, key, scope)
    if version is not None and version != state_version(current):
        return
    new_state = {name.encode(): value for name, value in state.items()}
    for name in sorted(current):
        if name not in new_state:
            ctx.txn.clear_state(service, key, name, scope)
    for name, value in sorted(new_state.items()):
        ctx.txn.set_state(service, key, name, value, scope)
