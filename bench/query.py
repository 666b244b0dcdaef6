"""`POST /query` latency against the number of invocations in the changelog.

Not a test: numbers for the notes. Starts Apache Kafka (or uses --bootstrap), one processor and
the admin on loopback, fills the log with invocations (an Invoke and its AttemptEnded produced
straight to `commands`, as bench/restart.py does; 1% are delayed by a day, so `status !=
'completed'` finds some), waits until the admin has applied them and its tables are built, then
times the queries the `restate` CLI sends (over HTTP, as the CLI does):

  - `SELECT 1`,
  - `SELECT count(*) FROM sys_invocation`,
  - `invocations list`: the Arrow count over the first 50000 rows, the JSON id page
    (`ORDER BY created_at DESC, id LIMIT 100`) and the JSON details of those ids (with the
    `sys_deployment` join) — the three queries the CLI runs for one `restate invocations list`,
  - `invocations describe`: the journal of one invocation,
  - the list query again right after 1000 more invocations arrived (the tables are brought up
    to date by that query).

    .venv/bin/python -m bench.query --sizes 2000 100000
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from confluent_kafka import Producer

from bench.procstat import process_tree, rss_bytes
from bench.restart import broker, completed_invocation, wait_drained
from kafka_core.kafka import create_topics
from schemas.partitioner import routing_key
from schemas.records import Command, Invoke
from schemas.settings import Settings
from schemas.topics import Topics
from tests.conftest import free_port
from tests.support.processes import Component

DAY_MS = 24 * 3600 * 1000
COUNT = (
    "SELECT COUNT(1) FROM (SELECT\n            *\n        FROM sys_invocation inv\n"
    "        LIMIT 50000\n        )\n        WHERE status != 'completed'"
)
IDS = (
    "SELECT\n            id\n        FROM sys_invocation inv\n        WHERE status != 'completed'\n"
    "        ORDER BY inv.created_at DESC, inv.id\n        LIMIT 100"
)
DETAILS = """SELECT
            inv.id, inv.target, inv.target_service_ty, inv.idempotency_key, inv.status,
            inv.created_at, inv.modified_at as state_modified_at, inv.pinned_deployment_id,
            inv.retry_count as num_retries, inv.last_failure as last_failure_message,
            inv.last_failure_related_entry_index as last_failure_entry_index,
            inv.last_failure_related_entry_name as last_failure_entry_name,
            inv.last_failure_related_entry_type as last_failure_entry_ty,
            inv.last_attempt_deployment_id, inv.last_attempt_server, inv.next_retry_at,
            inv.last_start_at, inv.invoked_by_id, inv.invoked_by_target, inv.trace_id,
            inv.completion_result, inv.completion_failure,
            dp.id IS NOT NULL as pinned_deployment_exists
        FROM sys_invocation inv
        LEFT JOIN sys_deployment dp ON dp.id = inv.pinned_deployment_id
        WHERE status != 'completed' AND inv.id in ({ids})
        ORDER BY inv.created_at DESC, inv.id"""
JOURNAL = """SELECT sj.index, sj.entry_type, sj.completed, sj.invoked_id, sj.invoked_target,
            sj.sleep_wakeup_at, sj.name, sj.promise_name, sj.version, sj.entry_json, sj.appended_at
        FROM sys_journal sj WHERE sj.id = '{id}' ORDER BY index DESC LIMIT 100"""


def fill(settings: Settings, count: int) -> None:
    """`count` completed invocations, 1% of them delayed by a day instead (scheduled)."""
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random", "linger.ms": 20}
    )
    topic = Topics(settings.topic_prefix).commands
    for i in range(count):
        pk = secrets.randbits(64)
        _, commands = completed_invocation(pk, reply=False)
        if i % 100 == 99:
            invoke = commands[0].body
            assert isinstance(invoke, Invoke)
            invoke.execute_at_ms = commands[0].timestamp_ms + DAY_MS
            commands = [Command(timestamp_ms=commands[0].timestamp_ms, body=invoke)]
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


class Admin:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=600)

    def query(self, sql: str, json: bool = True) -> httpx.Response:
        headers = {"accept": "application/json"} if json else {}
        r = self.client.post("/v4/query", json={"query": sql}, headers=headers)
        r.raise_for_status()
        return r

    def count(self) -> int:
        rows = self.query("SELECT count(*) AS n FROM sys_invocation_status").json()["rows"]
        return int(rows[0]["n"])

    def wait_count(self, n: int, timeout_s: float = 3600) -> float:
        t0 = time.monotonic()
        while self.count() < n:
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"the admin did not see {n} invocations in {timeout_s}s")
            time.sleep(0.5)
        return time.monotonic() - t0

    def list_once(self) -> None:
        """What one `restate invocations list` asks."""
        self.query(COUNT, json=False)
        ids = [r["id"] for r in self.query(IDS).json()["rows"]]
        if ids:
            self.query(DETAILS.format(ids=", ".join(f"'{i}'" for i in ids)))


def timed(call: object, reps: int) -> tuple[float, float]:
    """(median, max) milliseconds of `reps` calls."""
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="an Apache Kafka to use instead of starting one")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 100000])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the logs and data (path printed)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kinvoke-query-"))
    results = []
    with broker(args.bootstrap, tmp) as bootstrap:
        admin_port = free_port()
        env = {
            "KINVOKE_BOOTSTRAP_SERVERS": bootstrap,
            "KINVOKE_TOPIC_PREFIX": f"query{secrets.token_hex(3)}",
            "KINVOKE_PARTITIONS": str(args.partitions),
            "KINVOKE_STATE_DIR": str(tmp / "state"),
            "KINVOKE_ADMIN_PORT": str(admin_port),
            "KINVOKE_LOG_LEVEL": "warning",
        }
        settings = Settings(
            bootstrap_servers=bootstrap, topic_prefix=env["KINVOKE_TOPIC_PREFIX"], partitions=args.partitions
        )
        create_topics(settings)
        proc = Component("processor", env, tmp)
        admin_proc = Component("admin", env, tmp, admin_port)
        admin = Admin(f"http://127.0.0.1:{admin_port}")
        filled = 0
        try:
            proc.start()
            admin_proc.start(timeout_s=600)
            for size in sorted(args.sizes):
                t0 = time.monotonic()
                fill(settings, size - filled)
                wait_drained(settings, timeout_s=3600)
                admin.wait_count(size)
                filled = size
                print(f"invocations={size}: filled and applied in {time.monotonic() - t0:.0f} s", flush=True)
                some = admin.query("SELECT id FROM sys_invocation LIMIT 1").json()["rows"][0]["id"]
                row = {
                    "size": size,
                    "select 1": timed(lambda: admin.query("SELECT 1"), args.reps),
                    "count(*)": timed(lambda: admin.query("SELECT count(*) FROM sys_invocation"), args.reps),
                    "list: count": timed(lambda: admin.query(COUNT, json=False), args.reps),
                    "list: ids": timed(lambda: admin.query(IDS), args.reps),
                    "list (3 queries)": timed(admin.list_once, args.reps),
                    "describe: journal": timed(lambda s=some: admin.query(JOURNAL.format(id=s)), args.reps),
                }
                fill(settings, 1000)
                filled += 1000
                wait_drained(settings, timeout_s=600)
                time.sleep(2)  # the admin's view applies the changelog's tail
                row["list after +1000"] = timed(admin.list_once, 1)
                assert admin_proc.proc is not None
                rss_mb = rss_bytes(process_tree(admin_proc.proc.pid)) / 2**20
                print(f"  admin RSS {rss_mb:.0f} MiB", flush=True)
                results.append(row)
                for name, value in row.items():
                    if name != "size":
                        print(f"  {name:20s} median {value[0]:8.1f} ms   max {value[1]:8.1f} ms", flush=True)
            admin_proc.stop()
            t0 = time.monotonic()
            admin_proc.start(timeout_s=600)
            listening = time.monotonic() - t0
            first = timed(admin.list_once, 1)[0]
            print(
                f"admin restart at {filled} invocations: listening after {listening:.1f} s, "
                f"first list {first:.0f} ms"
            )
        finally:
            proc.stop()
            admin_proc.stop()
    names = [k for k in results[0] if k != "size"] if results else []
    print("\n| query (median / max ms) | " + " | ".join(f"{r['size']} invocations" for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[name][0]:.1f} / {r[name][1]:.1f}" for r in results) + " |")
    if args.keep:
        print(f"logs and data kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
