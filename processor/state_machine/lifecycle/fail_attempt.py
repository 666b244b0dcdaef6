"""A failed attempt: retry with exponential backoff, pause when the attempts are used up.

Defaults are Restate's invocation retry policy: 500 ms initial, factor 2, at most 60 s between
attempts, 70 attempts, then pause.
"""

from __future__ import annotations

from dataclasses import dataclass

from processor.state_machine.actions import InvokeAttempt
from processor.state_machine.context import StepContext
from schemas.records import AttemptFailed, InvocationPhase, InvocationStatus


@dataclass(frozen=True)
class RetryPolicy:
    initial_interval_ms: int = 500
    factor: float = 2.0
    max_interval_ms: int = 60_000
    max_attempts: int = 70

    def delay_ms(self, retry_count: int) -> int:
        """Delay before retry number `retry_count` (1-based)."""
        delay = self.initial_interval_ms * self.factor ** max(retry_count - 1, 0)
        return int(min(delay, self.max_interval_ms))


DEFAULT_RETRY_POLICY = RetryPolicy()


def apply(
    ctx: StepContext,
    status: InvocationStatus,
    failure: AttemptFailed,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> None:
    status.retry_count += 1
    status.retry_count_since_last_stored_entry += 1
    status.last_failure = failure
    if status.retry_count >= policy.max_attempts:
        status.phase = InvocationPhase.PAUSED
        status.next_retry_at_ms = None
        return
    delay = failure.next_retry_delay_ms if failure.next_retry_delay_ms is not None else None
    if delay is None:
        delay = policy.delay_ms(status.retry_count)
    status.next_retry_at_ms = ctx.now_ms + delay
    status.attempt += 1
    ctx.emit(
        InvokeAttempt(status.invocation_id, attempt=status.attempt, not_before_ms=status.next_retry_at_ms)
    )
