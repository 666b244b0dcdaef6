"""The processor's decoded copies of the changelog are bounded by payload bytes, not only by count:
with 32 MiB bodies a count alone lets memory grow by gigabytes."""

from __future__ import annotations

import pytest

from processor import storage
from processor.storage import PartitionStore
from schemas import changelog
from schemas.records import JournalEntry


def entry(invocation_id: str, index: int, size: int) -> JournalEntry:
    return JournalEntry(invocation_id=invocation_id, index=index, frame=b"x" * size, appended_at_ms=1)


def test_copies_are_dropped_at_a_commit_once_their_payloads_pass_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage, "CACHE_PAYLOAD_BYTES", 1000)
    store = PartitionStore(0)
    for inv in ("inv_a", "inv_b"):
        e = entry(inv, 0, 400)
        store.put(changelog.journal_key(inv, 0), e.encode(), e)
        assert [x.frame for x in store.journal(inv)] == [e.frame]  # cached now
    store.trim_caches()
    kept = store.journal("inv_a")
    assert kept is store.journal("inv_a")  # 800 bytes: under the budget, still the cached list

    e = entry("inv_a", 1, 400)
    store.put(changelog.journal_key("inv_a", 1), e.encode(), e)  # the cached journal grows past it
    store.trim_caches()
    again = store.journal("inv_a")
    assert again is not kept  # dropped, read back from the store
    assert [x.index for x in again] == [0, 1] and len(again[1].frame) == 400
