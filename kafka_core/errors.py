"""What a Kafka client error means for the component that saw it.

As Kafka Streams' `TaskMigratedException` vs retriable vs fatal: librdkafka tells us with
`KafkaError.fatal()`, `.txn_requires_abort()` and `.retriable()`, plus a few codes that say the
group moved on without us (our generation is stale: the partitions are someone else's now).
"""

from __future__ import annotations

from enum import Enum

from confluent_kafka import KafkaError, KafkaException


class Disposition(Enum):
    FENCED = "fenced"  # another producer took our transactional id: never re-initialise over it
    MIGRATED = "migrated"  # the group moved on: give the partitions up, rejoin, go on
    ABORT = "abort"  # abort the transaction, roll back, retry the batch
    RETRY = "retry"  # try the same call again
    FATAL = "fatal"  # the client is unusable: recreate it


_MIGRATED_CODES = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._ASSIGNMENT_LOST,
}
_FENCED_CODES = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


def error_of(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def classify(exc: BaseException) -> Disposition:
    """How to react to `exc` raised by a transactional producer or a group consumer call."""
    err = error_of(exc)
    if err is None:
        return Disposition.FATAL
    code = err.code()
    if code in _FENCED_CODES:
        return Disposition.FENCED
    if code in _MIGRATED_CODES:
        return Disposition.MIGRATED
    if err.fatal():
        return Disposition.FATAL
    if err.txn_requires_abort():
        return Disposition.ABORT
    if err.retriable():
        return Disposition.RETRY
    return Disposition.ABORT


def describe_error(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"


def describe(exc: BaseException) -> str:
    err = error_of(exc)
    if err is None:
        return f"{type(exc).__name__}: {exc}"
    flags = [
        f
        for f, on in (
            ("fatal", err.fatal()),
            ("abortable", err.txn_requires_abort()),
            ("retriable", err.retriable()),
        )
        if on
    ]
    return f"{err.name()}: {err.str()}" + (f" ({', '.join(flags)})" if flags else "")
