"""A failed attempt: retry with exponential backoff, pause when the attempts are used up.

The policy is the invocation's own (its options: handler over service over the server's
defaults); unset parts are Restate's: 500 ms initial, factor 2, at most 60 s between attempts,
70 attempts, then pause (or kill: the invocation ends with the last failure).

The policy counts `retry_attempts` (a new retry loop after a resume or a suspension, as Restate's
invoker makes a new `RetryIter` for each new invocation task); `retry_count` is what
`sys_invocation` shows, the failures since the invoker's status report for it began.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from processor.state_machine.actions import InvokeAttempt
from processor.state_machine.context import StepContext
from processor.state_machine.lifecycle import end_invocation
from schemas.records import AttemptFailed, Failure, InvocationOptions, InvocationPhase, InvocationStatus


@dataclass(frozen=True)
class RetryPolicy:
    initial_interval_ms: int = 500
    factor: float = 2.0
    max_interval_ms: int = 60_000
    max_attempts: int | None = 70  # None: retry forever
    on_max_attempts: str = "Pause"  # or "Kill"

    def delay_ms(self, retry: int) -> int:
        """Delay before retry number `retry` (1-based)."""
        delay = self.initial_interval_ms * self.factor ** max(retry - 1, 0)
        return int(min(delay, self.max_interval_ms))

    @classmethod
    def of(cls, options: InvocationOptions | None) -> RetryPolicy:
        """The invocation's own policy (its options), Restate's defaults where unset."""
        if options is None:
            return DEFAULT_RETRY_POLICY
        d = DEFAULT_RETRY_POLICY
        return cls(
            initial_interval_ms=_or(options.retry_initial_interval_ms, d.initial_interval_ms),
            factor=_or(options.retry_exponentiation_factor, d.factor),
            max_interval_ms=_or(options.retry_max_interval_ms, d.max_interval_ms),
            max_attempts=options.retry_max_attempts
            if options.retry_max_attempts is not None
            else d.max_attempts,
            on_max_attempts=_or(options.retry_on_max_attempts, d.on_max_attempts),
        )


T = TypeVar("T")


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


DEFAULT_RETRY_POLICY = RetryPolicy()


def apply(ctx: StepContext, status: InvocationStatus, failure: AttemptFailed) -> None:
    policy = RetryPolicy.of(status.options)
    status.retry_count += 1
    status.retry_attempts += 1
    status.retry_count_since_last_stored_entry += 1
    status.last_failure = failure
    if policy.max_attempts is not None and status.retry_attempts >= policy.max_attempts:
        status.next_retry_at_ms = None
        if policy.on_max_attempts == "Kill":
            # Restate's "kill" on max attempts: the invocation ends with the last failure.
            end_invocation.complete(ctx, status, Failure(code=failure.code, message=failure.message))
        else:
            status.phase = InvocationPhase.PAUSED
        return
    delay = failure.next_retry_delay_ms if failure.next_retry_delay_ms is not None else None
    if delay is None:
        delay = policy.delay_ms(status.retry_attempts)
    status.next_retry_at_ms = ctx.now_ms + delay
    status.attempt += 1
    ctx.emit(
        InvokeAttempt(status.invocation_id, attempt=status.attempt, not_before_ms=status.next_retry_at_ms)
    )
