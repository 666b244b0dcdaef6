"""Changelog keys: typed, human-readable state keys of the compacted changelog topic.

The key says what a record is (`status/…`, `journal/…`), so a consumer of the changelog can
decode any record without context, and compaction keeps exactly the latest value per key.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.records import AvroModel, InvocationStatus, JournalEntry

STATUS = "status"
JOURNAL = "journal"


def status_key(invocation_id: str) -> str:
    return f"{STATUS}/{invocation_id}"


def journal_key(invocation_id: str, index: int) -> str:
    # Zero-padded so that lexicographic order of keys is journal order.
    return f"{JOURNAL}/{invocation_id}/{index:010d}"


@dataclass(frozen=True)
class ChangelogKey:
    kind: str
    invocation_id: str
    index: int | None = None


def parse_key(key: str) -> ChangelogKey:
    parts = key.split("/")
    if parts[0] == STATUS and len(parts) == 2:
        return ChangelogKey(STATUS, parts[1])
    if parts[0] == JOURNAL and len(parts) == 3 and parts[2].isdigit():
        return ChangelogKey(JOURNAL, parts[1], int(parts[2]))
    raise ValueError(f"unknown changelog key {key!r}")


def decode_value(key: ChangelogKey, value: bytes) -> AvroModel:
    if key.kind == STATUS:
        return InvocationStatus.decode(value)
    return JournalEntry.decode(value)
