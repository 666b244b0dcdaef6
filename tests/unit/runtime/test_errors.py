"""Kafka errors are classified by what the processor must do about them."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka_core.errors import Disposition, classify, describe


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KafkaError(KafkaError._FENCED, "fenced", fatal=True), Disposition.FENCED),
        (KafkaError(KafkaError.PRODUCER_FENCED, "fenced", fatal=True), Disposition.FENCED),
        (KafkaError(KafkaError.FENCED_INSTANCE_ID, "static member taken"), Disposition.FENCED),
        (KafkaError(KafkaError.ILLEGAL_GENERATION, "gen", txn_requires_abort=True), Disposition.MIGRATED),
        (KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "gone", txn_requires_abort=True), Disposition.MIGRATED),
        (KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "rebalance"), Disposition.MIGRATED),
        (KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "seq", fatal=True), Disposition.FATAL),
        (KafkaError(KafkaError._TIMED_OUT, "slow", txn_requires_abort=True), Disposition.ABORT),
        (KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True), Disposition.RETRY),
        (KafkaError(KafkaError.UNKNOWN, "?"), Disposition.ABORT),
    ],
)
def test_classification(error: KafkaError, expected: Disposition) -> None:
    assert classify(KafkaException(error)) == expected


def test_anything_else_is_fatal_and_described() -> None:
    assert classify(RuntimeError("boom")) == Disposition.FATAL
    text = describe(KafkaException(KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)))
    assert text.startswith("_TIMED_OUT") and "retriable" in text
