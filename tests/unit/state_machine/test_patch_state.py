"""Admin state edits (PatchState): replace the whole state, wait for the lock, version check."""

from __future__ import annotations

from processor.state_machine.lifecycle.patch_state import state_version
from processor.storage import PartitionStore
from processor.validation import rejection
from schemas import changelog
from schemas.ids import partition_key_of
from schemas.partitioner import partition_of
from schemas.records import Command, Ended, ManageInvocation, ManageOperation, PatchState
from tests.unit.state_machine.conftest import Harness, attempt, output
from tests.unit.state_machine.test_objects import inv_id, invoke_object, set_state


def patch(
    new_state: dict[str, bytes], version: str | None = None, key: str = "k1", ts: int = 1500
) -> Command:
    return Command(
        timestamp_ms=ts, body=PatchState(service="Counter", key=key, version=version, new_state=new_state)
    )


def seed(sm: Harness, **state: bytes) -> None:
    a = inv_id(90)
    frames = [set_state(name.encode(), value) for name, value in state.items()]
    sm.apply(invoke_object(a, ts=100), attempt(200, 1, [*frames, output(b"0")], Ended(), inv=a))


def test_state_version_is_restates() -> None:
    """The vectors of Restate's `StateMutationVersion` tests: the CLI sends these strings."""
    assert state_version({b"name": b"bob"}) == "tDqA04Lj3_qJ-PgNPTecXDGZgpwy6jm2Ni2BYqJIthM"
    assert state_version({b"b": b"bbb", b"a": b"aaa"}) == "RVM17P6x18Wp-JnzQ01BzmqCvhAunTOQI_az6Px3Zyk"
    assert state_version({}) == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


def test_an_edit_of_an_unlocked_object_replaces_its_whole_state(sm: Harness) -> None:
    seed(sm, count=b"1", name=b'"x"')
    sm.apply(patch({"count": b"777", "new": b"true"}))
    assert sm.store.state_of("Counter", "k1") == {b"count": b"777", b"new": b"true"}
    assert (changelog.state_key("Counter", "k1", b"name"), None) in sm.steps[-1].writes  # a tombstone
    assert ("Counter", "k1") not in sm.store.objects()  # nothing queued: no object record


def test_an_empty_edit_clears_the_state(sm: Harness) -> None:
    seed(sm, count=b"1", name=b'"x"')
    sm.apply(patch({}))
    assert sm.store.state_of("Counter", "k1") == {}
    assert all(value is None for _, value in sm.steps[-1].writes)


def test_the_version_must_match_the_current_state(sm: Harness) -> None:
    seed(sm, count=b"1")
    sm.apply(patch({"count": b"2"}, version=state_version({b"count": b"9"})))
    assert sm.store.state_of("Counter", "k1") == {b"count": b"1"}  # dropped, as Restate drops it
    assert sm.steps[-1].writes == []
    sm.apply(patch({"count": b"2"}, version=state_version({b"count": b"1"})))
    assert sm.store.state_of("Counter", "k1") == {b"count": b"2"}


def test_an_edit_waits_for_the_lock_holder_and_the_inbox_ahead_of_it(sm: Harness) -> None:
    a, b, c = inv_id(1), inv_id(2), inv_id(3)
    sm.apply(invoke_object(a), invoke_object(b))
    sm.apply(patch({"count": b"100"}))
    sm.apply(invoke_object(c))
    obj = sm.store.object("Counter", "k1")
    assert obj.inbox == [b, c] and [e.ahead for e in obj.pending_state] == [1]
    assert sm.store.state_of("Counter", "k1") == {}
    # a writes, then ends: b takes the lock; the edit is still behind b.
    sm.apply(attempt(2000, 1, [set_state(b"count", b"1"), output(b"1")], Ended(), inv=a))
    assert sm.store.object("Counter", "k1").locked_by == b
    assert sm.store.state_of("Counter", "k1") == {b"count": b"1"}
    # b ends: the edit applies before c gets the lock.
    sm.apply(attempt(3000, 1, [set_state(b"count", b"2"), output(b"2")], Ended(), inv=b))
    assert sm.store.state_of("Counter", "k1") == {b"count": b"100"}
    obj = sm.store.object("Counter", "k1")
    assert obj.locked_by == c and obj.pending_state == []


def test_a_killed_inbox_entry_moves_the_edits_behind_it_up(sm: Harness) -> None:
    a, b = inv_id(1), inv_id(2)
    sm.apply(invoke_object(a), invoke_object(b), patch({"count": b"5"}))
    sm.apply(
        Command(timestamp_ms=1600, body=ManageInvocation(invocation_id=b, operation=ManageOperation.KILL))
    )
    assert [e.ahead for e in sm.store.object("Counter", "k1").pending_state] == [0]
    sm.apply(attempt(2000, 1, [output(b"1")], Ended(), inv=a))
    assert sm.store.state_of("Counter", "k1") == {b"count": b"5"}
    assert ("Counter", "k1") not in sm.store.objects()


def test_queued_edits_are_rebuilt_from_the_changelog(sm: Harness) -> None:
    a = inv_id(1)
    sm.apply(invoke_object(a), patch({"count": b"3"}, version=state_version({})))
    restored = PartitionStore(0)
    for key, value in sm.writes:
        restored.restore(key, value)
    assert restored.objects() == sm.store.objects()
    assert restored.object("Counter", "k1").pending_state[0].version == state_version({})


def test_a_state_edit_is_accepted_only_on_its_keys_partition() -> None:
    """Anyone may produce to `commands`: an edit keyed wrongly is dead-lettered, not applied."""
    edit = patch({"count": b"1"})
    home = partition_of(partition_key_of("k1"), 8)
    assert rejection(edit, home, 8) is None
    reason = rejection(edit, (home + 1) % 8, 8)
    assert reason is not None and f"belongs to partition {home}" in reason


def scoped(new_state: dict[str, bytes], scope: str, version: str | None = None) -> Command:
    body = PatchState(service="Counter", key="k1", version=version, new_state=new_state, scope=scope)
    return Command(timestamp_ms=1500, body=body)


def test_a_scoped_edit_is_of_the_scoped_instance_only(sm: Harness) -> None:
    """As Restate 1.7.12 (measured): the edit of `scope` s1 makes state of its own for Counter/k1
    in s1; the unscoped object's state is untouched, and so is another scope's."""
    seed(sm, count=b"3")
    sm.apply(scoped({"count": b"7", "x": b"1"}, "s1"))
    sm.apply(scoped({"count": b"8"}, "s2"))
    assert sm.store.state_of("Counter", "k1") == {b"count": b"3"}
    assert sm.store.state_of("Counter", "k1", "s1") == {b"count": b"7", b"x": b"1"}
    assert sm.store.state_of("Counter", "k1", "s2") == {b"count": b"8"}
    assert changelog.state_key("Counter", "k1", b"count", "s2") == "scoped_state/s2/Counter/k1/count"
    # Replaced whole, with Restate's version check against the scoped state.
    sm.apply(scoped({"x": b"2"}, "s1", version=state_version({b"count": b"3"})))
    assert sm.store.state_of("Counter", "k1", "s1") == {b"count": b"7", b"x": b"1"}  # dropped
    sm.apply(scoped({"x": b"2"}, "s1", version=state_version({b"count": b"7", b"x": b"1"})))
    assert sm.store.state_of("Counter", "k1", "s1") == {b"x": b"2"}
    assert (changelog.state_key("Counter", "k1", b"count", "s1"), None) in sm.steps[-1].writes
    # A locked object does not hold back the scoped instance's edit (nothing runs on it).
    sm.apply(invoke_object(inv_id(1)))
    sm.apply(scoped({}, "s1"))
    assert sm.store.state_of("Counter", "k1", "s1") == {}
    restored = PartitionStore(0)
    for key, value in sm.writes:
        restored.restore(key, value)
    assert restored.state_of("Counter", "k1", "s2") == {b"count": b"8"}
    assert restored.state_of("Counter", "k1") == {b"count": b"3"}
    parsed = changelog.parse_key(changelog.state_key("Counter", "a/b", b"n", "s2"))
    assert (parsed.kind, parsed.scope, parsed.key, parsed.state_key) == (changelog.STATE, "s2", "a/b", b"n")


def test_a_scoped_edit_belongs_to_its_scopes_partition() -> None:
    """Restate's `ServiceId::new`: a scoped instance's partition key is its scope's."""
    edit = scoped({"count": b"1"}, "s1")
    home = partition_of(partition_key_of("s1"), 64)
    assert home != partition_of(partition_key_of("k1"), 64)  # so the test tells the two apart
    assert rejection(edit, home, 64) is None
    reason = rejection(edit, partition_of(partition_key_of("k1"), 64), 64)
    assert reason is not None and f"belongs to partition {home} (its scope 's1'" in reason


def test_inbox_entries_and_queued_edits_take_sequence_numbers_that_stay(sm: Harness) -> None:
    """As Restate's inbox counter: an invocation put in the inbox and an edit queued behind the
    lock each take the next number; an entry keeps its number as others leave."""
    a, b, c, d = inv_id(1), inv_id(2), inv_id(3), inv_id(4)
    sm.apply(invoke_object(a), invoke_object(b), patch({"count": b"5"}), invoke_object(c))
    obj = sm.store.object("Counter", "k1")
    assert (obj.inbox, obj.inbox_sequence_numbers, obj.next_inbox_sequence_number) == ([b, c], [0, 2], 3)
    sm.apply(
        Command(timestamp_ms=1600, body=ManageInvocation(invocation_id=b, operation=ManageOperation.KILL))
    )
    sm.apply(invoke_object(d))
    obj = sm.store.object("Counter", "k1")
    assert (obj.inbox, obj.inbox_sequence_numbers) == ([c, d], [2, 3])
    sm.apply(attempt(2000, 1, [output(b"1")], Ended(), inv=a))  # the edit applies, c takes the lock
    assert sm.store.object("Counter", "k1").inbox_sequence_numbers == [3]


def test_an_inbox_stored_before_sequence_numbers_is_numbered_by_position(sm: Harness) -> None:
    a, b, c = inv_id(1), inv_id(2), inv_id(3)
    sm.apply(invoke_object(a), invoke_object(b))
    old = sm.store.object("Counter", "k1")
    old.inbox_sequence_numbers, old.next_inbox_sequence_number = [], 0
    sm.store.restore(changelog.object_key("Counter", "k1"), old.encode())
    sm.apply(invoke_object(c))
    obj = sm.store.object("Counter", "k1")
    assert (obj.inbox, obj.inbox_sequence_numbers, obj.next_inbox_sequence_number) == ([b, c], [0, 1], 2)
