"""Invocations by status and target (`kinvoke_invocations`): the partition store keeps the counts
at each status write (through commits, rollbacks, restores and purges) so a commit reads them
without scanning the invocations, and the gauge sums the owned partitions' counts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from kafka_core.changelog_store import ChangelogStore
from processor.metrics import InvocationsByState
from processor.storage import PartitionStore, Transaction
from schemas import changelog
from schemas.records import AttemptFailed, Ended, Suspended
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output
from tests.unit.state_machine.test_objects import inv_id, invoke_object

OTHER = "inv_1" + "0" * 10 + "1" + "0" * 21 + "1"


def greeter(counts: dict[tuple[str, str, str], int]) -> dict[str, int]:
    """The non-zero counts of Greeter/greet, by status."""
    return {s: n for (s, svc, h), n in counts.items() if (svc, h) == ("Greeter", "greet") and n}


def test_counts_follow_an_invocation_through_its_lifecycle() -> None:
    sm = Harness()
    sm.apply(invoke(ts=1000), invoke(ts=1000, inv=OTHER))
    assert greeter(sm.store.invocation_counts(now_ms=1000)) == {"running": 2}
    assert sm.store.counts_changed is False  # read: nothing new since

    # A failed attempt backs off until its retry is due (1100 + 500), then it runs again.
    sm.apply(attempt(1100, 1, [], AttemptFailed(code=500, message="boom")))
    assert sm.store.counts_changed is True
    assert greeter(sm.store.invocation_counts(now_ms=1200)) == {"running": 1, "backing-off": 1}
    assert sm.store.backing_off is True
    assert greeter(sm.store.invocation_counts(now_ms=1600)) == {"running": 2}
    assert sm.store.backing_off is False

    sm.apply(attempt(1700, 2, [], Suspended(waiting_completions=[9])))
    assert greeter(sm.store.invocation_counts(now_ms=1700)) == {"running": 1, "suspended": 1}
    sm.apply(attempt(1800, 1, [output(b'"hi"')], Ended(), inv=OTHER))
    counts = sm.store.invocation_counts(now_ms=1800)
    assert greeter(counts) == {"suspended": 1, "completed": 1}
    # A target's running and backing-off series stay (at 0) once it has had invoked invocations.
    assert counts[("running", "Greeter", "greet")] == 0
    assert counts[("backing-off", "Greeter", "greet")] == 0

    # Purged (retention, or an operator): the invocation is no longer counted.
    Transaction(sm.store).purge_invocation(OTHER)
    assert greeter(sm.store.invocation_counts(now_ms=1900)) == {"suspended": 1}


def test_a_status_rewrite_in_the_same_phase_changes_no_count() -> None:
    sm = Harness()
    sm.apply(invoke())
    sm.store.invocation_counts(now_ms=1000)
    status = sm.store.status(INV)
    assert status is not None
    status.journal_length += 1  # the state machine rewrites statuses as journals grow
    Transaction(sm.store).put_status(status)
    assert sm.store.counts_changed is False


def test_the_inbox_counts_as_pending() -> None:
    sm = Harness()
    a, b, c = inv_id(1), inv_id(2), inv_id(3)
    sm.apply(invoke_object(a), invoke_object(b), invoke_object(c))
    counts = sm.store.invocation_counts(now_ms=1000)
    assert counts[("running", "Counter", "add")] == 1 and counts[("pending", "Counter", "add")] == 2
    sm.apply(attempt(2000, 1, [output(b"1")], Ended(), inv=a))  # the lock passes to b
    counts = sm.store.invocation_counts(now_ms=2000)
    assert [counts[(s, "Counter", "add")] for s in ("running", "pending", "completed")] == [1, 1, 1]


def test_a_rollback_restores_the_committed_counts() -> None:
    sm = Harness()
    sm.apply(invoke())
    sm.store.kv.commit()
    sm.apply(attempt(1100, 1, [output(b"1")], Ended()))
    assert greeter(sm.store.invocation_counts(now_ms=1200)) == {"completed": 1}
    sm.store.kv.rollback()  # the batch's transaction was aborted
    sm.store.drop_caches()
    assert greeter(sm.store.invocation_counts(now_ms=1200)) == {"running": 1}


def test_a_store_restored_from_the_changelog_has_the_same_counts() -> None:
    sm = Harness()
    sm.apply(invoke(ts=1000), invoke(ts=1000, inv=OTHER))
    sm.apply(attempt(1100, 1, [], AttemptFailed(code=500, message="boom")))
    sm.apply(attempt(1200, 1, [output(b"1")], Ended(), inv=OTHER))
    restored = PartitionStore(0)
    for key, value in sm.writes:  # records only, as read from the changelog
        restored.restore(key, value)
    for now in (1300, 1700):
        assert restored.invocation_counts(now) == sm.store.invocation_counts(now)
    assert greeter(restored.invocation_counts(1300)) == {"backing-off": 1, "completed": 1}


def test_counts_survive_a_restart_from_the_checkpointed_store(tmp_path: Path) -> None:
    path = tmp_path / "p0.sqlite"
    sm = Harness(store=PartitionStore(0, ChangelogStore(path)))
    sm.apply(invoke())
    sm.store.kv.commit({0: 5})
    sm.store.kv.close()
    reopened = PartitionStore(0, ChangelogStore(path))
    assert reopened.kv.checkpoint(0) is not None  # kept: only the changelog's tail is restored
    assert greeter(reopened.invocation_counts(now_ms=2000)) == {"running": 1}


def test_a_store_written_before_the_counts_existed_is_rebuilt(tmp_path: Path) -> None:
    """Its statuses were never counted: it is wiped, so the task restores it from the changelog."""
    path = tmp_path / "p0.sqlite"
    sm = Harness(store=PartitionStore(0, ChangelogStore(path)))
    sm.apply(invoke())
    sm.store.kv.commit({0: 5})
    sm.store.kv.close()
    with sqlite3.connect(path) as db:  # what an earlier kinvoke left
        db.execute("DELETE FROM meta WHERE name = 'partition_store'")
        db.execute("DROP TABLE invocation_counts")
        db.execute("DROP TABLE invocation_phases")
    reopened = PartitionStore(0, ChangelogStore(path))
    assert reopened.kv.checkpoint(0) is None
    assert reopened.kv.get(changelog.status_key(INV)) is None
    assert reopened.invocation_counts(now_ms=2000) == {}


def test_the_gauge_sums_the_owned_partitions_and_drops_a_partition_given_up() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("invocations", "", ["state", "service", "handler"], registry=registry)
    by_state = InvocationsByState(gauge)

    def value(state: str, service: str = "Greeter", handler: str = "greet") -> float | None:
        return registry.get_sample_value(
            "invocations", {"state": state, "service": service, "handler": handler}
        )

    by_state.update(0, {("running", "Greeter", "greet"): 2, ("completed", "Greeter", "greet"): 5})
    by_state.update(1, {("running", "Greeter", "greet"): 1, ("pending", "Counter", "add"): 3})
    assert value("running") == 3 and value("completed") == 5 and value("pending", "Counter", "add") == 3
    # A partition's counts are replaced as a whole: a label it no longer has loses its share.
    by_state.update(0, {("completed", "Greeter", "greet"): 7})
    assert value("running") == 1 and value("completed") == 7
    by_state.drop(1)
    assert value("running") is None  # no owned partition has it: another processor reports it
    assert value("pending", "Counter", "add") is None
    assert value("completed") == 7
    by_state.update(0, {("completed", "Greeter", "greet"): 0})
    assert value("completed") == 0  # a count at 0 stays a series
