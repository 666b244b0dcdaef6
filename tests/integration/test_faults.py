"""Fault tests on Apache Kafka: whole stacks as OS processes on loopback, faults injected while
clients keep working, and at the end exactly-once checked twice — by the application (a ledger
that records every operation it applied) and by `kinvoke replay --verify` (the changelog is what
replaying `commands` gives).

Bounded: a few hundred operations, every wait polled with a generous bound, every process
stopped by the fixtures whatever happens. Measured numbers (failover time, drain rate) are
printed (`pytest -s` shows them), never asserted tightly: CI machines are small.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_core.kafka import producer_config
from kinvoke.broker import Broker, BrokerError, KafkaBroker
from schemas import codec
from schemas.ids import InvocationId
from schemas.partitioner import routing_key
from schemas.records import (
    Command,
    InvocationResult,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
    Success,
)
from tests.conftest import free_port
from tests.support.cluster import LedgerWorkload, Op, Stack, StackTimeout, running_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("KINVOKE_TEST_BROKER") == "local",
        reason="fault tests need Apache Kafka (group expiry, transaction timeouts)",
    ),
]

SESSION_TIMEOUT_MS = 6000
# A dead processor's open transaction blocks its partitions' next owner until the broker aborts
# it; short, so a failover is bounded by the session timeout rather than by this.
TRANSACTION_TIMEOUT_MS = 6000
FAULT_ENV = {
    "KINVOKE_PROCESSOR_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
    "KINVOKE_PROCESSOR_TRANSACTION_TIMEOUT_MS": str(TRANSACTION_TIMEOUT_MS),
}
PARTITIONS = 8
BURST = 10_000
DRAIN_BOUND_S = 600.0  # generous: a 2-core machine shares it with the broker and the SDK
STALL_S = 60.0  # no completion for this long: stuck, fail now


@pytest.fixture
def restartable_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A broker this test may stop and start: the session's, or (when the tests use someone
    else's broker through KINVOKE_TEST_BOOTSTRAP) an Apache Kafka of its own."""
    if not os.environ.get("KINVOKE_TEST_BOOTSTRAP"):
        yield request.getfixturevalue("kafka_broker")
        return
    broker = KafkaBroker(data_dir=tmp_path / "kafka", port=free_port(), log_file=tmp_path / "kafka.log")
    try:
        broker.start(90.0)
    except BrokerError as e:
        pytest.fail(f"could not start a broker of this test's own: {e}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


def _wall(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def _progress(stack: Stack, work: LedgerWorkload, n: int, timeout_s: float, what: str) -> None:
    """Until the workload got `n` more answers."""
    target = work.answered() + n
    stack.wait_until(lambda: work.answered() >= target, timeout_s, f"{n} more answers {what}")


# -- 1. the ledger under chaos ---------------------------------------------------------------------


def test_ledger_under_chaos(restartable_broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    """Processors SIGKILLed, stopped, SIGSTOPped past their session (a zombie), the ingress and
    the admin killed, the broker restarted — while clients apply operations with idempotency keys
    and send one-way operations. Every operation answered, applied exactly once."""
    started = time.monotonic()
    stack = Stack(
        restartable_broker.bootstrap,
        topic_prefix,
        tmp_path,
        partitions=PARTITIONS,
        # p1 and p2 share a state directory (separate slots); p3 has its own.
        processors={"p1": "state-shared", "p2": "state-shared", "p3": "state-p3"},
        env_extra=FAULT_ENV,
    )
    timeline: list[tuple[str, float]] = []

    def step(what: str, since: float) -> None:
        timeline.append((what, time.monotonic() - since))

    with running_stack(stack):
        stack.wait_all_partitions_answer(120)
        step("stack up", started)
        keys = [k for ks in stack.keys_per_partition("acct", 4).values() for k in ks]
        work = LedgerWorkload(stack.ingress_url, keys, workers=4, pace_s=0.25).start()
        try:
            _progress(stack, work, 10, 60, "before the first fault")

            # SIGKILL a processor (no clean shutdown, its transaction left open) and restart it.
            t = time.monotonic()
            stack.kill("p1")
            stack.restart("p1")
            stack.wait_all_partitions_answer(90, "every partition to answer after p1 was SIGKILLed")
            _progress(stack, work, 5, 60, "after p1 was SIGKILLed")
            step("p1 SIGKILLed and restarted", t)

            # A clean stop (it leaves the group) and a restart.
            t = time.monotonic()
            stack.terminate("p3")
            stack.restart("p3")
            stack.wait_all_partitions_answer(90, "every partition to answer after p3 was stopped")
            _progress(stack, work, 5, 60, "after p3 was stopped")
            step("p3 SIGTERMed and restarted", t)

            # A zombie: p2 is stopped mid-attempt, past its session timeout; the others take its
            # partitions and finish its invocations; then it wakes up with a late attempt outcome
            # and a stale group generation. Its late writes must change nothing.
            t = time.monotonic()
            zombie_parts = stack.wait_until(lambda: stack.owned("p2"), 30, "p2 to own partitions")
            zkeys = stack.keys_per_partition("zombie", 1)
            slow = [
                Op(id=f"zombie-op-{p}", key=zkeys[p][0], amount=1000 + p, send=False, sleep_ms=2500)
                for p in sorted(zombie_parts)
            ]
            for op in slow:
                work.run_async(op)
            stack.wait_until(
                lambda: all(
                    f"ledger.apply {op.id} attempt started" in stack.deployment.log_text() for op in slow
                ),
                30,
                "the slow operations to reach the deployment",
            )
            events_before = len(stack.events("p2"))
            stack.signal("p2", signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                others = [n for n in stack.procs if n != "p2"]
                stack.wait_until(
                    lambda: zombie_parts <= set().union(*(stack.owned(n) for n in others)),
                    SESSION_TIMEOUT_MS / 1000 + 60,
                    f"the others to take p2's partitions {sorted(zombie_parts)}",
                )
                stack.wait_until(
                    lambda: all(op.answer for op in slow),
                    90,
                    "the others to finish the stopped processor's slow operations",
                )
                taken_over = time.monotonic() - stopped_at
            finally:
                stack.signal("p2", signal.SIGCONT)
            # Once awake it must notice that the group moved on (its partitions lost, its
            # transaction refused). It may then go on (rejoining the group) or stop itself, having
            # been fenced: either is fine here, it is not reported as a crash meanwhile.
            stack.expected_down.add("p2")
            zombie_exit: int | None = None
            gave_up = ("tasks.lost", "tasks.revoked", "processor.transaction_failed")

            def zombie_settled() -> bool:
                nonlocal zombie_exit
                proc = stack.procs["p2"].proc
                assert proc is not None
                if proc.poll() is not None:
                    zombie_exit = proc.returncode
                    return True
                new = [e.get("event") for e in stack.events("p2")[events_before:]]
                first = next((i for i, e in enumerate(new) if e in gave_up), None)
                return first is not None and "tasks.assigned" in new[first:]  # it rejoined

            stack.wait_until(zombie_settled, 60, "p2 (the zombie) to notice it lost its partitions")
            zombie_events = stack.events("p2")[events_before:]
            late = [
                e
                for e in zombie_events
                if e.get("event") == "attempt.ended"
                and e.get("invocation_id") in {op.invocation_id for op in slow}
            ]
            noticed = [e for e in zombie_events if e.get("event") in (*gave_up, "process.fatal")]
            what = [(e["event"], e.get("partitions") or e.get("error") or e.get("reason")) for e in noticed]
            print(
                f"\nzombie p2: partitions {sorted(zombie_parts)} taken over after {taken_over:.1f}s; "
                f"after SIGCONT: {what}; "
                f"late attempt outcomes it appended: {len(late)}; exit code: {zombie_exit}"
            )
            assert noticed, (
                f"the zombie never noticed it lost its partitions:\n{stack.current_log('p2')[-5000:]}"
            )
            if zombie_exit is not None:
                log_text = stack.current_log("p2")
                assert "fenced" in log_text, (
                    f"the zombie exited ({zombie_exit}), not fenced:\n{log_text[-5000:]}"
                )
                stack.restart("p2")
            stack.expected_down.discard("p2")
            stack.wait_all_partitions_answer(90, "every partition to answer after the zombie woke up")
            _progress(stack, work, 5, 60, "after the zombie woke up")
            step("p2 SIGSTOPped past its session, then SIGCONTed", t)

            # The ingress and the admin API, SIGKILLed and restarted.
            t = time.monotonic()
            stack.kill("ingress")
            stack.restart("ingress")
            stack.wait_all_partitions_answer(60, "every partition to answer after the ingress restarted")
            _progress(stack, work, 5, 60, "after the ingress restarted")
            step("ingress SIGKILLed and restarted", t)
            t = time.monotonic()
            stack.kill("admin")
            stack.restart("admin")
            deployments = httpx.get(f"{stack.admin_url}/deployments", timeout=30).json()["deployments"]
            assert [d["id"] for d in deployments] == [stack.deployment_id]
            step("admin SIGKILLed and restarted", t)

            # The broker: a clean stop and a start on the same data.
            t = time.monotonic()
            restartable_broker.stop()
            restartable_broker.start(90.0)
            step("broker stopped and started", t)
            stack.wait_all_partitions_answer(120, "every partition to answer after the broker restart")
            _progress(stack, work, 10, 120, "after the broker restart")
            step("broker restart recovered", t)
        except BaseException:
            work.abort()
            raise
        finally:
            work.stop()

        t = time.monotonic()
        ledgers = work.wait_settled(stack)
        problems = work.problems(ledgers)
        step("ledgers settled", t)
        print(f"ledger: {work.summary()}")
        assert not problems, "\n".join(problems[:50])
        assert not work.anomalies, "unexpected answers:\n" + "\n".join(work.anomalies[:30])
        t = time.monotonic()
        verify_s = stack.stop_processors_and_verify()
        step(f"replay --verify ({verify_s:.1f}s)", t)
    for done_what, seconds in timeline:
        print(f"  {done_what}: {seconds:.1f}s")
    print(f"ledger under chaos: {time.monotonic() - started:.0f}s in all")


# -- 2. the deployment down for a while ------------------------------------------------------------


def test_deployment_down_for_a_while(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """The SDK deployment is killed with attempts in flight, new invocations arrive while it is
    down, it comes back on the same port: every invocation retries and completes, once."""
    started = time.monotonic()
    stack = Stack(
        kafka_bootstrap, topic_prefix, tmp_path, partitions=4, processors={"p1": "state"}, env_extra=FAULT_ENV
    )
    with running_stack(stack):
        stack.wait_all_partitions_answer(90)
        work = LedgerWorkload(stack.ingress_url, [], request_timeout_s=60, op_deadline_s=150)
        try:
            in_flight = [
                Op(f"inflight-{i}", f"down-{i}", 10 + i, send=False, sleep_ms=3000) for i in range(4)
            ]
            for op in in_flight:
                work.run_async(op)
            stack.wait_until(
                lambda: all(
                    f"ledger.apply {op.id} attempt started" in stack.deployment.log_text() for op in in_flight
                ),
                30,
                "the in-flight attempts to reach the deployment",
            )
            stack.expected_down.add("deployment")
            stack.deployment.kill()
            down_at = time.monotonic()
            # On other keys: an object key whose lock an in-flight one holds would just queue.
            arriving = [Op(f"arriving-{i}", f"arrive-{i}", 100 + i, send=i % 3 == 0) for i in range(9)]
            for op in arriving:
                work.run_async(op)

            def failed_attempts(inv: str) -> int:
                return sum(
                    1
                    for e in stack.events("p1")
                    if e.get("event") == "attempt.ended"
                    and e.get("invocation_id") == inv
                    and e.get("outcome") == "AttemptFailed"
                )

            # Down "for a while": until the in-flight invocations failed 4 attempts (backing off
            # 0.5 s, 1 s, 2 s in between) and every new one at least 2.
            stack.wait_until(
                lambda: (
                    all(failed_attempts(op.invocation_id) >= 4 for op in in_flight)
                    and all(failed_attempts(op.invocation_id) >= 2 for op in arriving)
                ),
                60,
                "every invocation to fail attempts against the stopped deployment",
            )
            down_for = time.monotonic() - down_at
            stack.deployment.start()
            stack.expected_down.discard("deployment")
            back_at = time.monotonic()
            ops = in_flight + arriving
            stack.wait_until(lambda: all(op.answer for op in ops), 120, "every invocation to complete")
            completed_after = time.monotonic() - back_at
        except BaseException:
            work.abort()
            raise
        finally:
            work.stop()
        ledgers = work.wait_settled(stack)
        problems = work.problems(ledgers)
        assert not problems, "\n".join(problems)
        assert not work.anomalies, "\n".join(work.anomalies)
        retries = {op.id: failed_attempts(op.invocation_id) for op in ops}
        print(
            f"\ndeployment down {down_for:.1f}s; all {len(ops)} invocations completed {completed_after:.1f}s "
            f"after it came back; failed attempts per invocation: {sorted(retries.values())}"
        )
        verify_s = stack.stop_processors_and_verify()
    print(f"deployment down: {time.monotonic() - started:.0f}s in all (replay --verify {verify_s:.1f}s)")


# -- 3. a burst of Invokes produced straight to `commands` -----------------------------------------


def _greet(name: str) -> tuple[str, Command]:
    now = int(time.time() * 1000)
    inv = str(InvocationId.generate(secrets.randbits(64), now, secrets.randbits(80)))
    return inv, Command(
        timestamp_ms=now,
        body=Invoke(
            invocation_id=inv,
            argument=json.dumps(name).encode(),
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
            target=InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE),
            reply_to_results=True,
        ),
    )


def test_burst_of_invokes_drains(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """10,000 Invokes produced to `commands` by a plain producer, two processors sharing the
    partitions: every one completes, with the right answer."""
    started = time.monotonic()
    stack = Stack(
        kafka_bootstrap,
        topic_prefix,
        tmp_path,
        partitions=PARTITIONS,
        processors={"p1": "state-1", "p2": "state-2"},
        env_extra=FAULT_ENV,
    )
    with running_stack(stack):
        stack.wait_all_partitions_answer(90)
        both = stack.wait_until(
            lambda: (
                (o := {n: stack.owned(n) for n in stack.procs})
                and all(o.values())
                and set().union(*o.values()) == set(range(PARTITIONS))
                and o
            ),
            60,
            "both processors to own partitions",
        )
        results = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"{topic_prefix}-burst-reader",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        try:
            meta = results.list_topics(stack.topics.results, timeout=10).topics[stack.topics.results]
            ends = []
            for p in meta.partitions:
                _, high = results.get_watermark_offsets(
                    TopicPartition(stack.topics.results, p), timeout=10, cached=False
                )
                ends.append(TopicPartition(stack.topics.results, p, high))
            results.assign(ends)

            expected: dict[str, str] = {}
            producer = Producer(producer_config(stack.settings))
            t0 = time.monotonic()
            for i in range(BURST):
                inv, cmd = _greet(f"n{i}")
                expected[inv] = f"Hello n{i}"
                key = routing_key(InvocationId.parse(inv).partition_key)
                while True:
                    try:
                        producer.produce(stack.topics.commands, key=key, value=cmd.encode())
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
            assert producer.flush(60) == 0
            produced_s = time.monotonic() - t0

            done: dict[str, bytes] = {}
            wrong: list[str] = []
            progress = {"reported": 0, "count": 0, "at": time.monotonic()}

            def drained() -> bool:
                for msg in results.consume(1000, 0.5):
                    value = msg.value()
                    if msg.error() is not None or value is None:
                        continue
                    inv = (msg.key() or b"").decode()
                    if inv not in expected or codec.schema_name_of(value) != InvocationResult.avro_name:
                        continue
                    result = InvocationResult.decode(value)
                    if (
                        not isinstance(result.result, Success)
                        or json.loads(result.result.value) != expected[inv]
                    ):
                        wrong.append(f"{inv}: {result.result}")
                    done[inv] = result.result.value if isinstance(result.result, Success) else b""
                now = time.monotonic()
                if len(done) > progress["count"]:
                    progress["count"], progress["at"] = len(done), now
                elif now - progress["at"] > STALL_S:
                    raise StackTimeout(f"no invocation completed for {STALL_S:.0f}s")
                if len(done) // 2000 > progress["reported"]:
                    progress["reported"] = len(done) // 2000
                    print(f"  {len(done)} results after {now - t0:.1f}s")
                return len(done) == len(expected)

            try:
                stack.wait_until(drained, DRAIN_BOUND_S, f"all {BURST} invocations to complete", every_s=0)
            except StackTimeout as e:
                pytest.fail(
                    f"{len(done)} of {BURST} completed after {time.monotonic() - t0:.0f}s: "
                    f"{str(e).splitlines()[0]}\n{stack.log_tails()}",
                    pytrace=False,
                )
            drain_s = time.monotonic() - t0
        finally:
            results.close()
        assert not wrong, wrong[:10]
        print(
            f"\nburst: {BURST} Invokes produced in {produced_s:.1f}s, all completed after {drain_s:.1f}s "
            f"({BURST / drain_s:.0f} invocations/s) on 2 processors owning "
            f"{ {n: sorted(ps) for n, ps in both.items()} }"
        )
        sql = (
            "SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed' AND target = 'Greeter/greet'"
        )
        stack.wait_until(
            lambda: stack.query(sql)[0]["n"] >= BURST, 120, "the admin API to show every completed invocation"
        )
        verify_s = stack.stop_processors_and_verify()
    print(f"burst: {time.monotonic() - started:.0f}s in all (replay --verify {verify_s:.1f}s)")


# -- 5. failover timing ----------------------------------------------------------------------------


def test_failover_time(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Three processors under load, one SIGKILLed: calls on its partitions complete on the others
    within the session timeout plus a rebuild. Prints the measured time."""
    started = time.monotonic()
    stack = Stack(
        kafka_bootstrap,
        topic_prefix,
        tmp_path,
        partitions=PARTITIONS,
        processors={"p1": "state-1", "p2": "state-2", "p3": "state-3"},
        env_extra=FAULT_ENV,
    )
    with running_stack(stack):
        stack.wait_all_partitions_answer(90)
        owners = stack.wait_until(
            lambda: (o := {n: stack.owned(n) for n in stack.procs}) and all(o.values()) and o,
            60,
            "all three processors to own partitions",
        )
        keys = [k for ks in stack.keys_per_partition("acct", 2).values() for k in ks]
        work = LedgerWorkload(stack.ingress_url, keys, workers=4, pace_s=0.2).start()
        try:
            _progress(stack, work, 20, 60, "before the kill")
            owners = {n: stack.owned(n) for n in stack.procs}
            victim = max(owners, key=lambda n: len(owners[n]))
            victim_parts = sorted(owners[victim])
            probe_keys = stack.keys_per_partition("failover", 1)
            killed_wall, t0 = time.time(), time.monotonic()
            stack.kill(victim)
            probes = [Op(f"failover-{p}", probe_keys[p][0], 1, send=False) for p in victim_parts]
            threads = [work.run_async(op) for op in probes]
            for th in threads:
                th.join(SESSION_TIMEOUT_MS / 1000 + TRANSACTION_TIMEOUT_MS / 1000 + 120)
            assert all(op.answer for op in probes), [(op.id, op.errors[-3:]) for op in probes]
            per_partition = {p: op.answered_at - t0 for p, op in zip(victim_parts, probes, strict=True)}  # type: ignore[operator]
            failover_s = max(per_partition.values())
            _progress(stack, work, 10, 60, "after the failover")
        except BaseException:
            work.abort()
            raise
        finally:
            work.stop()
        # When the survivors were given the partitions and had rebuilt them (their logs).
        survivors = [n for n in stack.procs if n != victim]
        assigned: dict[int, float] = {}
        running: dict[int, float] = {}
        restore_ms: dict[int, int | None] = {}
        for n in survivors:
            for e in stack.events(n):
                if _wall(e) < killed_wall:
                    continue
                if e.get("event") == "tasks.assigned":
                    for p in e.get("partitions", []):
                        assigned.setdefault(p, _wall(e) - killed_wall)
                if e.get("event") == "task.running" and e.get("partition") in victim_parts:
                    running.setdefault(e["partition"], _wall(e) - killed_wall)
                    restore_ms.setdefault(e["partition"], e.get("restore_ms"))
        print(
            f"\nfailover: {victim} (partitions {victim_parts}) SIGKILLed under load; session timeout "
            f"{SESSION_TIMEOUT_MS / 1000:.0f}s, transaction timeout {TRANSACTION_TIMEOUT_MS / 1000:.0f}s\n"
            f"  reassigned after {max(assigned.values(), default=float('nan')):.1f}s, running again after "
            f"{max(running.values(), default=float('nan')):.1f}s (restores {restore_ms} ms)\n"
            f"  calls on its partitions completed after {failover_s:.1f}s "
            f"(per partition: { {p: round(s, 1) for p, s in per_partition.items()} })"
        )
        bound = SESSION_TIMEOUT_MS / 1000 + TRANSACTION_TIMEOUT_MS / 1000 + 60
        assert failover_s < bound, f"failover took {failover_s:.1f}s (bound {bound:.0f}s)"
        ledgers = work.wait_settled(stack)
        problems = work.problems(ledgers)
        assert not problems, "\n".join(problems[:50])
        assert not work.anomalies, "\n".join(work.anomalies[:30])
        print(f"failover workload: {work.summary()}")
        verify_s = stack.stop_processors_and_verify()
    print(f"failover: {time.monotonic() - started:.0f}s in all (replay --verify {verify_s:.1f}s)")
