"""What one state-machine step works with: the transaction, the command's clock, the actions."""

from __future__ import annotations

from dataclasses import dataclass, field

from processor.state_machine.actions import Action, NotifyAttempt
from processor.storage import Transaction
from schemas.records import InvocationPhase, InvocationStatus, JournalEntry, ResolvedCallee


@dataclass
class StepContext:
    txn: Transaction
    now_ms: int  # the command's timestamp: the state machine never reads the wall clock
    actions: list[Action] = field(default_factory=list)
    callees: list[ResolvedCallee] = field(default_factory=list)  # registry answers for this attempt's calls
    ended_attempt: tuple[str, int] | None = None  # (invocation, attempt) whose stream is closed already

    def next_callee(self) -> ResolvedCallee | None:
        return self.callees.pop(0) if self.callees else None

    def status(self, invocation_id: str) -> InvocationStatus | None:
        return self.txn.store.status(invocation_id)

    def journal(self, invocation_id: str) -> list[JournalEntry]:
        return self.txn.store.journal(invocation_id)

    def append_entry(self, status: InvocationStatus, frame: bytes, *, is_command: bool) -> JournalEntry:
        """Append to the journal and keep the status counters in step (caller stores the status)."""
        entry = JournalEntry(
            invocation_id=status.invocation_id,
            index=status.journal_length,
            frame=frame,
            appended_at_ms=self.now_ms,
        )
        self.txn.append_journal(entry)
        status.journal_length += 1
        if is_command:
            status.commands_count += 1
        status.last_stored_entry_at_ms = self.now_ms
        status.retry_count_since_last_stored_entry = 0
        running = (status.invocation_id, status.attempt)
        if not is_command and status.phase == InvocationPhase.INVOKED and running != self.ended_attempt:
            # An attempt may be running on an open stream: it gets the notification at once.
            self.emit(NotifyAttempt(status.invocation_id, status.attempt, entry.index, frame))
        return entry

    def emit(self, action: Action) -> None:
        self.actions.append(action)
