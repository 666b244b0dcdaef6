"""Restart time against changelog size: how long until a restarted processor (and admin) serve.

Not a test: numbers for the notes. Starts Apache Kafka (or uses --bootstrap) and one processor
on loopback, fills the log with N completed invocations (an Invoke and its AttemptEnded produced
straight to `commands`, so no deployment is needed), then restarts the processor

  - warm: same state directory (the task stores restore only the changelog's tail),
  - cold: state directory wiped (every partition rebuilt from the changelog),

and measures from the process start until a probe invocation on every partition completed
(its result is on `results`). The admin is measured the same way (start until it listens:
its changelog view is caught up by then).

    .venv/bin/python -m bench.restart --sizes 0 5000 20000 100000
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from kafka_core.kafka import create_topics
from kinvoke.broker import start_broker
from schemas.ids import InvocationId
from schemas.partitioner import partition_of, routing_key
from schemas.records import (
    AttemptEnded,
    Command,
    Ended,
    InvocationResult,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
)
from schemas.service_protocol import MessageType, encode_message
from schemas.service_protocol import protocol_pb2 as pb
from schemas.settings import Settings
from schemas.topics import Topics
from tests.conftest import free_port
from tests.support.processes import Component, wait_for_port

T = TypeVar("T")
TARGET = InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE)
OUTPUT = encode_message(MessageType.OUTPUT_COMMAND, pb.OutputCommandMessage(value=pb.Value(content=b'"hi"')))


def completed_invocation(pk: int, reply: bool) -> tuple[str, list[Command]]:
    now = int(time.time() * 1000)
    inv = str(InvocationId.generate(pk, now, secrets.randbits(80)))
    invoke = Invoke(
        invocation_id=inv,
        target=TARGET,
        argument=b'"bench"',
        invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
        reply_to_results=reply,
    )
    ended = AttemptEnded(
        invocation_id=inv,
        attempt=1,
        deployment_id="dp_bench",
        protocol_version=6,
        new_entries=[OUTPUT],
        outcome=Ended(),
    )
    return inv, [Command(timestamp_ms=now, body=invoke), Command(timestamp_ms=now + 1, body=ended)]


def fill(settings: Settings, count: int) -> None:
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random", "linger.ms": 20}
    )
    topic = Topics(settings.topic_prefix).commands
    for i in range(count):
        pk = secrets.randbits(64)
        _, commands = completed_invocation(pk, reply=False)
        for cmd in commands:
            while True:
                try:
                    producer.produce(topic, key=routing_key(pk), value=cmd.encode())
                    break
                except BufferError:
                    producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def lag(settings: Settings) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": settings.processor_group,
            "isolation.level": "read_committed",
        }
    )
    try:
        topic = Topics(settings.topic_prefix).commands
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        committed = consumer.committed(tps, timeout=30)
        total = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=30)
            total += high - max(tp.offset, 0)
        return total
    finally:
        consumer.close()


def wait_drained(settings: Settings, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    why = "still applying"
    while True:
        try:
            remaining = lag(settings)
        except KafkaException as e:  # a topic just created may not have a leader yet
            remaining, why = -1, str(e)
        if remaining == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{remaining} commands still unapplied after {timeout_s}s ({why})")
        why = "still applying"
        time.sleep(1.0)


def retried(call: Callable[[], T], timeout_s: float = 120) -> T:
    """Kafka calls right after a broker (re)start fail until the partitions have leaders."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def probe_all_partitions(settings: Settings, timeout_s: float) -> float:
    """Produce a completed invocation to every partition; seconds until all results are out."""
    topics = Topics(settings.topic_prefix)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"bench-{secrets.token_hex(4)}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "latest",
        }
    )
    meta = consumer.list_topics(topics.results, timeout=30).topics[topics.results]
    ends = []
    for p in meta.partitions:
        _, high = retried(
            lambda p=p: consumer.get_watermark_offsets(TopicPartition(topics.results, p), timeout=30)
        )
        ends.append(TopicPartition(topics.results, p, high))
    consumer.assign(ends)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random"})
    wanted: set[str] = set()
    covered: set[int] = set()
    pk = 0
    while len(covered) < settings.partitions:
        p = partition_of(pk, settings.partitions)
        if p not in covered:
            covered.add(p)
            inv, commands = completed_invocation(pk, reply=True)
            wanted.add(inv)
            for cmd in commands:
                producer.produce(topics.commands, key=routing_key(pk), value=cmd.encode())
        pk += 1
    producer.flush(30)
    started = time.monotonic()
    try:
        while wanted:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{len(wanted)} probes unanswered after {timeout_s}s")
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            with contextlib.suppress(Exception):
                wanted.discard(InvocationResult.decode(msg.value() or b"").invocation_id)
        return time.monotonic() - started
    finally:
        consumer.close()


def timed_processor_start(proc: Component, settings: Settings) -> tuple[float, float]:
    """(seconds from start until every partition answered, of which waiting for the probes)."""
    t0 = time.monotonic()
    proc.start()
    probe = probe_all_partitions(settings, timeout_s=600)
    return time.monotonic() - t0, probe


def timed_admin_start(admin: Component, port: int) -> float:
    t0 = time.monotonic()
    admin.start(timeout_s=600)
    wait_for_port("127.0.0.1", port, 600, admin.proc)
    return time.monotonic() - t0


@contextlib.contextmanager
def broker(bootstrap: str | None, tmp: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    b = start_broker("kafka", tmp / "kafka", free_port(), tmp / "kafka.log")
    try:
        yield b.bootstrap
    finally:
        b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="an Apache Kafka to use instead of starting one")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 5000, 20000, 100000])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the logs and data (path printed)")
    parser.add_argument("--log-level", default="warning", help="of the kinvoke processes")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kinvoke-restart-"))
    with broker(args.bootstrap, tmp) as bootstrap:
        admin_port = free_port()
        state_dir = tmp / "state"
        env = {
            "KINVOKE_BOOTSTRAP_SERVERS": bootstrap,
            "KINVOKE_TOPIC_PREFIX": f"restart{secrets.token_hex(3)}",
            "KINVOKE_PARTITIONS": str(args.partitions),
            "KINVOKE_STATE_DIR": str(state_dir),
            "KINVOKE_ADMIN_PORT": str(admin_port),
            "KINVOKE_LOG_LEVEL": args.log_level,
        }
        settings = Settings(
            bootstrap_servers=bootstrap, topic_prefix=env["KINVOKE_TOPIC_PREFIX"], partitions=args.partitions
        )
        create_topics(settings)
        proc = Component("processor", env, tmp)
        admin = Component("admin", env, tmp, admin_port)
        rows = []
        filled = 0
        try:
            proc.start()
            for size in sorted(args.sizes):
                t0 = time.monotonic()
                fill(settings, size - filled)
                wait_drained(settings, timeout_s=3600)
                fill_s = time.monotonic() - t0
                filled = size
                proc.stop()
                warm, _ = timed_processor_start(proc, settings)
                proc.stop()
                shutil.rmtree(state_dir, ignore_errors=True)
                cold, _ = timed_processor_start(proc, settings)
                admin_cold = timed_admin_start(admin, admin_port)
                admin.stop()
                admin_warm = timed_admin_start(admin, admin_port)
                admin.stop()
                rows.append((size, fill_s, warm, cold, admin_warm, admin_cold))
                print(
                    f"invocations={size:7d}  processor restart: warm {warm:6.2f} s  cold {cold:6.2f} s  "
                    f"admin: warm {admin_warm:6.2f} s  cold {admin_cold:6.2f} s  (filled in {fill_s:.0f} s)",
                    flush=True,
                )
        finally:
            proc.stop()
            admin.stop()
        print("\n| invocations | processor warm restart | cold (no local state) | admin warm | admin cold |")
        print("|---:|---:|---:|---:|---:|")
        for size, _, warm, cold, aw, ac in rows:
            print(f"| {size} | {warm:.2f} s | {cold:.2f} s | {aw:.2f} s | {ac:.2f} s |")
    if args.keep:
        print(f"logs and data kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
