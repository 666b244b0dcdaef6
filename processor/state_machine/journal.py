"""Reading the journal: the parts of stored frames the state machine needs."""

from __future__ import annotations

from schemas.records import Failure, JournalEntry, Success
from schemas.service_protocol import Frame, MessageType, decode_message, input_command, is_notification

__all__ = ["find_output", "input_command", "notification_ids"]


def find_output(entries: list[JournalEntry]) -> Success | Failure | None:
    """The result in the journal's OutputCommand (the last one wins, as only one is allowed)."""
    for entry in reversed(entries):
        frame = Frame.parse(entry.frame)
        if frame.type == MessageType.OUTPUT_COMMAND:
            out = decode_message(frame)
            if out.WhichOneof("result") == "failure":
                f = out.failure
                return Failure(code=f.code, message=f.message, metadata={m.key: m.value for m in f.metadata})
            return Success(value=out.value.content)
    return None


def notification_ids(entries: list[JournalEntry]) -> set[tuple[str, int | str]]:
    """Ids of every notification in the journal, as ("completion"|"signal"|"named", id)."""
    ids: set[tuple[str, int | str]] = set()
    for entry in entries:
        frame = Frame.parse(entry.frame)
        if not is_notification(frame.type):
            continue
        note = decode_message(frame)
        which = note.WhichOneof("id")
        if which == "completion_id":
            ids.add(("completion", note.completion_id))
        elif which == "signal_id":
            ids.add(("signal", note.signal_id))
        elif which == "signal_name":
            ids.add(("named", note.signal_name))
    return ids
