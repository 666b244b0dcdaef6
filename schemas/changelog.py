"""Changelog keys: typed, human-readable state keys of the compacted changelog topic.

The key says what a record is (`status/…`, `journal/…`, `object/…`, `state/…`), so a consumer of
the changelog can decode any record without context, and compaction keeps exactly the latest
value per key. Object keys and state keys are percent-encoded (they may contain `/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, quote_from_bytes, unquote, unquote_to_bytes

STATUS = "status"
JOURNAL = "journal"
OBJECT = "object"
STATE = "state"
SCOPED_STATE = "scoped_state"  # a scoped instance's state (Restate's `scope`; set by the admin API only)
TIMER = "timer"
PROMISE = "promise"


def status_key(invocation_id: str) -> str:
    return f"{STATUS}/{invocation_id}"


def journal_key(invocation_id: str, index: int) -> str:
    # Zero-padded so that lexicographic order of keys is journal order.
    return f"{JOURNAL}/{invocation_id}/{index:010d}"


def object_key(service: str, key: str) -> str:
    return f"{OBJECT}/{service}/{quote(key, safe='')}"


def state_key(service: str, key: str, name: bytes, scope: str | None = None) -> str:
    """`scope`: a scoped instance's entry (scopes are `[a-zA-Z0-9_.-]`: no `/` to encode)."""
    tail = f"{service}/{quote(key, safe='')}/{quote_from_bytes(name, safe='')}"
    return f"{STATE}/{tail}" if scope is None else f"{SCOPED_STATE}/{scope}/{tail}"


def promise_key(service: str, key: str, name: str) -> str:
    return f"{PROMISE}/{service}/{quote(key, safe='')}/{quote(name, safe='')}"


def timer_key(wake_up_at_ms: int, invocation_id: str, completion_id: int) -> str:
    # Zero-padded time first: key order is firing order.
    return f"{TIMER}/{wake_up_at_ms:016d}/{invocation_id}/{completion_id}"


@dataclass(frozen=True)
class ChangelogKey:
    kind: str
    invocation_id: str = ""
    index: int | None = None
    service: str = ""
    key: str = ""
    state_key: bytes = b""
    scope: str | None = None


def parse_key(key: str) -> ChangelogKey:
    parts = key.split("/")
    if parts[0] == STATUS and len(parts) == 2:
        return ChangelogKey(STATUS, parts[1])
    if parts[0] == JOURNAL and len(parts) == 3 and parts[2].isdigit():
        return ChangelogKey(JOURNAL, parts[1], int(parts[2]))
    if parts[0] == OBJECT and len(parts) == 3:
        return ChangelogKey(OBJECT, service=parts[1], key=unquote(parts[2]))
    if parts[0] == TIMER and len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
        return ChangelogKey(TIMER, invocation_id=parts[2], index=int(parts[3]))
    if parts[0] == PROMISE and len(parts) == 4:
        return ChangelogKey(
            PROMISE, service=parts[1], key=unquote(parts[2]), state_key=unquote(parts[3]).encode()
        )
    if parts[0] == STATE and len(parts) == 4:
        return ChangelogKey(
            STATE, service=parts[1], key=unquote(parts[2]), state_key=unquote_to_bytes(parts[3])
        )
    if parts[0] == SCOPED_STATE and len(parts) == 5:
        return ChangelogKey(
            STATE,
            service=parts[2],
            key=unquote(parts[3]),
            state_key=unquote_to_bytes(parts[4]),
            scope=parts[1],
        )
    raise ValueError(f"unknown changelog key {key!r}")
