"""kinvoke (on Apache Kafka) side by side with the real Restate server: same SDK deployment, same load.

Not a test: numbers for the notes. Starts both on loopback (kinvoke: Apache Kafka, admin, ingress,
one processor; Restate: the server from npm, installed pinned into .kinvoke/restate-server/), each
with its own copy of the same SDK deployment (examples/python/bench_services.py under hypercorn),
then drives one system at a time with the same closed-loop HTTP client, workload by workload,
kinvoke then Restate, for several rounds. Per workload and system it reports req/s, p50/p99
latency, CPU time per call of every process of the system (from /proc) and their peak RSS.

    .venv/bin/python -m bench.compare                          # all workloads, 3 rounds of 10 s
    .venv/bin/python -m bench.compare --rounds 3 --duration 5 --workloads greet-c1 greet-c64
    .venv/bin/python -m bench.compare --out docs/bench.md

How a workload is measured: a warm-up (`--warmup` s, not counted), then the measured phase: the
clients issue requests for `--duration` s (or until `--requests`), every request issued is awaited
and counted; req/s is the successful calls over the time until the last one (at least the phase if
requests were still hanging: a stall counts); CPU is read from /proc/<pid>/stat before and after.
`send-c64` sends at most `--send-count` and waits (before and after) until the system is idle again,
so its CPU includes running what was sent; `direct-produce` (kinvoke only) produces `--direct-count`
Invoke commands straight to `commands` and waits for all results. A process that dies is restarted
after the run; such runs are reported but left out of the figures. Both deployments run hypercorn
without its limit of 1000 requests per connection (see --sdk-max-requests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.procstat import RssSampler, Trees, idle_cores, wait_quiet
from bench.restate_server import RESTATE_VERSION, restate_server, version_of
from bench.stack import SdkDeployment, kinvoke_stack, register
from kinvoke.broker import KAFKA_VERSION
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
from schemas.topics import Topics
from tests.support.processes import REPO, Component

APP = "examples.python.bench_services:app"
SERVICES = ("Greeter", "Counter", "BenchRun")
SYSTEMS = ("kinvoke", "restate")
TITLE = {"kinvoke": "kinvoke", "restate": "Restate"}
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "call" (wait for the result), "send" (202 Accepted) or "direct" (produce to Kafka)
    concurrency: int
    path: str = ""  # may hold {key} (see `keys`) and {run} (a new value for every run)
    body: bytes = b""
    keys: int = 0  # {key} is one of `keys` keys, chosen at random per request
    only: str | None = None  # the one system it applies to

    def url(self, base: str, rng: random.Random, run: str) -> str:
        return base + self.path.format(key=f"k{rng.randrange(self.keys)}" if self.keys else "", run=run)


WORKLOADS = [
    Workload("greet-c1", "call", 1, "/Greeter/greet", b'"bench"'),
    Workload("greet-c16", "call", 16, "/Greeter/greet", b'"bench"'),
    Workload("greet-c64", "call", 64, "/Greeter/greet", b'"bench"'),
    Workload("add-100keys-c64", "call", 64, "/Counter/{key}/add", b"1", keys=100),
    Workload("add-hotkey-c16", "call", 16, "/Counter/hot-{run}/add", b"1"),
    Workload("steps10-c1", "call", 1, "/BenchRun/ten_steps", b"0"),
    Workload("steps10-c16", "call", 16, "/BenchRun/ten_steps", b"0"),
    Workload("send-c64", "send", 64, "/Greeter/greet/send", b'"bench"'),
    Workload("direct-produce", "direct", 0, only="kinvoke"),
]
BY_NAME = {w.name: w for w in WORKLOADS}


@dataclass
class Part:
    """One process of a system: its pid now, why it is gone (None while it runs), how to restart it."""

    pid: Callable[[], int | None]
    gone: Callable[[], str | None]
    restart: Callable[[], object]


def popen_part(proc: Callable[[], subprocess.Popen[bytes] | None], restart: Callable[[], object]) -> Part:
    def pid() -> int | None:
        p = proc()
        return p.pid if p is not None else None

    def gone() -> str | None:
        p = proc()
        code = None if p is None else p.poll()
        return None if code is None else f"exited with code {code}"

    return Part(pid, gone, restart)


def component_part(c: Component) -> Part:
    return popen_part(lambda: c.proc, c.start)


@dataclass
class System:
    """A running system under test: where to call it and the processes that make it up."""

    name: str
    ingress: str
    admin: str
    parts: dict[str, Part]  # process name -> process (its descendants count too)
    logs: dict[str, tuple[Path, str]]  # process name -> (directory, glob) of its log files
    bootstrap: str | None = None  # kinvoke: for the direct-produce path
    version: str = ""
    idle: float = 0.0  # CPU (cores) the system uses when nothing happens
    broken: str | None = None  # why the system cannot be measured any more
    trees: Trees = field(init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Find the processes again (after a restart; a worker process appears once it serves)."""
        self.trees = Trees({n: pid for n, p in self.parts.items() if (pid := p.pid()) is not None})

    def revive(self) -> list[str]:
        """Restart every process that died (and say so); the system serves again afterwards."""
        events = []
        for name, part in self.parts.items():
            why = part.gone()
            if why is None:
                continue
            events.append(f"{name} {why}, restarted")
            try:
                part.restart()
            except Exception as e:  # noqa: BLE001 - the system is out of the benchmark then
                self.broken = f"{name} {why} and could not be restarted: {e}"
                return events
        if events:
            if not serving(self, timeout_s=120):
                self.broken = f"not serving within 120 s after restarting ({'; '.join(events)})"
            self.refresh()
        return events


def serving(system: System, timeout_s: float) -> bool:
    """Until a Greeter.greet call succeeds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.post(f"{system.ingress}/Greeter/greet", json="probe", timeout=10)
            if r.status_code == 200:
                return True
        time.sleep(0.5)
    return False


@dataclass
class Run:
    """One workload on one system in one round."""

    system: str
    workload: str
    round: int
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds in the phase
    rss: dict[str, int] = field(default_factory=dict)  # process -> peak RSS bytes in the phase
    client_cpu: float = 0.0
    drain_s: float | None = None
    first_error: str | None = None
    events: list[str] = field(default_factory=list)  # processes that died, problems logged
    died: bool = False  # a process of the system died during the run (or right after it)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def cpu_ms_per_call(self) -> dict[str, float]:
        return {p: 1000 * s / self.ok for p, s in self.cpu.items()} if self.ok else {}


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks; nan for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def client_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --- HTTP load -------------------------------------------------------------------------------


@dataclass
class Phase:
    """When a load phase started, when it stopped issuing, when its last success / request ended."""

    start: float
    deadline: float
    last_ok: float
    last_any: float

    def seconds(self) -> float:
        """Until the last success, but at least until the deadline if requests were still running:
        a stall (requests that time out) counts as time, not beyond the phase."""
        return max(self.last_ok, min(self.deadline, self.last_any)) - self.start


async def _load(
    session: aiohttp.ClientSession,
    system: System,
    wl: Workload,
    seconds: float,
    max_requests: int | None,
    run: Run | None,
) -> Phase:
    """`wl.concurrency` clients issue requests for `seconds` (or `max_requests`) and await them all;
    successes and errors go to `run` (None: warm-up)."""
    rng = random.Random()
    tag = secrets.token_hex(4)
    start = time.perf_counter()
    phase = Phase(start, start + seconds, start, start)
    issued = 0
    ok_status = 202 if wl.kind == "send" else 200
    headers = {"content-type": "application/json"}

    async def client() -> None:
        nonlocal issued
        while time.perf_counter() < phase.deadline and (max_requests is None or issued < max_requests):
            issued += 1
            t0 = time.perf_counter()
            error: str | None = None
            try:
                async with session.post(wl.url(system.ingress, rng, tag), data=wl.body, headers=headers) as r:
                    text = await r.read()
                    if r.status != ok_status:
                        error = f"HTTP {r.status}: {text[:200]!r}"
            except TimeoutError:
                error = f"no answer within {REQUEST_TIMEOUT_S:g} s"
            except aiohttp.ClientError as e:
                error = f"{type(e).__name__}: {e}"
            t1 = time.perf_counter()
            phase.last_any = max(phase.last_any, t1)
            if error is None:
                phase.last_ok = max(phase.last_ok, t1)
            if run is None:
                continue
            if error is None:
                run.ok += 1
                run.latencies.append(t1 - t0)
            else:
                run.errors += 1
                run.first_error = run.first_error or error

    await asyncio.gather(*(client() for _ in range(wl.concurrency)))
    return phase


async def http_workload(system: System, wl: Workload, rnd: int, args: argparse.Namespace) -> Run:
    run = Run(system.name, wl.name, rnd)
    connector = aiohttp.TCPConnector(limit=wl.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    send = wl.kind == "send"
    # Sends are accepted faster than they run: a bounded number, so running them all stays bounded.
    limit = args.requests or (args.send_count if send else None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.warmup > 0:
            await _load(session, system, wl, args.warmup, 200 if send else None, None)
        if send:  # what the warm-up sent runs before the measured phase
            await asyncio.to_thread(wait_quiet, system.trees, system.idle, max_s=args.drain_timeout)
        cpu0, client0 = system.trees.cpu(), client_cpu()
        with RssSampler(system.trees) as rss:
            phase = await _load(session, system, wl, args.duration, limit, run)
            cpu1 = system.trees.cpu()
            if send:
                quiet_t, cpu1 = await asyncio.to_thread(
                    wait_quiet, system.trees, system.idle, max_s=args.drain_timeout
                )
                run.drain_s = max(0.0, quiet_t - phase.last_any)
    run.seconds = phase.seconds()
    run.client_cpu = client_cpu() - client0
    run.cpu = {p: max(0.0, cpu1.get(p, 0.0) - cpu0[p]) for p in cpu0}
    run.rss = rss.peak
    return run


# --- kinvoke's direct-produce path -------------------------------------------------------------


def direct_workload(system: System, rnd: int, count: int, timeout_s: float) -> Run:
    """Produce `count` Invoke commands (Greeter.greet, reply to `results`) straight to `commands`;
    latency is from a command's produce call until its result is read from `results`."""
    assert system.bootstrap is not None
    run = Run(system.name, "direct-produce", rnd)
    topics = Topics("kinvoke")
    consumer = Consumer(
        {
            "bootstrap.servers": system.bootstrap,
            "group.id": f"bench-{secrets.token_hex(4)}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    producer = Producer(
        {"bootstrap.servers": system.bootstrap, "partitioner": "murmur2_random", "linger.ms": 5}
    )
    try:
        meta = consumer.list_topics(topics.results, timeout=30).topics[topics.results]
        ends = []
        for p in meta.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topics.results, p), timeout=30)
            ends.append(TopicPartition(topics.results, p, high))
        consumer.assign(ends)
        target = InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE)
        sent: dict[str, float] = {}
        cpu0, client0 = system.trees.cpu(), client_cpu()
        t0 = time.perf_counter()
        with RssSampler(system.trees) as rss:
            for _ in range(count):
                now_ms = int(time.time() * 1000)
                inv = InvocationId.generate(secrets.randbits(64), now_ms, secrets.randbits(80))
                cmd = Command(
                    timestamp_ms=now_ms,
                    body=Invoke(
                        invocation_id=str(inv),
                        argument=b'"bench"',
                        invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
                        target=target,
                        reply_to_results=True,
                    ),
                )
                while True:
                    try:
                        producer.produce(
                            topics.commands, key=routing_key(inv.partition_key), value=cmd.encode()
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
                sent[str(inv)] = time.perf_counter()
                producer.poll(0)
            producer.flush(30)
            last_end = t0
            deadline = time.monotonic() + timeout_s
            while sent and time.monotonic() < deadline:
                for msg in consumer.consume(500, 0.2):
                    if msg.error() or not msg.value():
                        continue
                    value = msg.value() or b""
                    if codec.schema_name_of(value) != InvocationResult.avro_name:
                        continue
                    result = InvocationResult.decode(value)
                    t_sent = sent.pop(result.invocation_id, None)
                    if t_sent is None:
                        continue
                    last_end = time.perf_counter()
                    if isinstance(result.result, Success):
                        run.ok += 1
                        run.latencies.append(last_end - t_sent)
                    else:
                        run.errors += 1
                        run.first_error = run.first_error or str(result.result)
            cpu1 = system.trees.cpu()
        if sent:
            run.errors += len(sent)
            run.first_error = run.first_error or f"{len(sent)} results missing after {timeout_s}s"
        run.seconds = last_end - t0
        run.client_cpu = client_cpu() - client0
        run.cpu = {p: max(0.0, cpu1.get(p, 0.0) - cpu0[p]) for p in cpu0}
        run.rss = rss.peak
        return run
    finally:
        consumer.close()


# --- the two systems -----------------------------------------------------------------------------


@contextlib.contextmanager
def kinvoke_system(processors: int, keep: bool, sdk: dict[str, int | str | bool]) -> Iterator[System]:
    with kinvoke_stack("kafka", APP, SERVICES, processors=processors, keep=keep, sdk_settings=sdk) as stack:
        tmp = stack.tmp
        broker = stack.broker
        parts = {
            "kafka": Part(
                lambda: broker.pid, lambda: None if broker.is_running() else "exited", broker.restart
            )
        }
        logs = {"kafka": (tmp, "broker.log")}
        for name, c in stack.components.items():
            parts[name] = component_part(c)
            logs[name] = (c.log_dir, f"{c.name}-*.log")
        d = stack.deployment
        parts["sdk"] = popen_part(lambda: d.proc, d.restart)
        logs["sdk"] = (tmp, "sdk.log")
        if keep:
            print(f"kinvoke's logs and data: {tmp}", flush=True)
        yield System(
            "kinvoke",
            stack.ingress,
            stack.admin,
            parts,
            logs,
            bootstrap=stack.bootstrap,
            version=git_commit(),  # the code it runs: the working tree at its start
        )


@contextlib.contextmanager
def restate_system(version: str, keep: bool, sdk: dict[str, int | str | bool]) -> Iterator[System]:
    with restate_server(version, keep=keep) as server:
        d = SdkDeployment(APP, log=server.log_file.parent / "sdk.log", settings=sdk)
        try:
            d.start()
            register(server.admin, server.ingress, d.uri, list(SERVICES))
            if keep:
                print(f"Restate's logs and data: {server.log_file.parent}", flush=True)
            yield System(
                "restate",
                server.ingress,
                server.admin,
                {
                    "restate-server": popen_part(lambda: server.proc, server.start),
                    "sdk": popen_part(lambda: d.proc, d.restart),
                },
                {
                    "restate-server": (server.log_file.parent, server.log_file.name),
                    "sdk": (server.log_file.parent, "sdk.log"),
                },
                version=version_of(server.binary),
            )
        finally:
            d.stop()


def warm_up(system: System, seconds: float) -> None:
    """Connections, JIT, caches: a few seconds of each kind of call, not measured."""
    args = argparse.Namespace(
        warmup=0.0, duration=seconds / 3, requests=None, send_count=0, drain_timeout=30.0
    )
    for name in ("greet-c16", "add-100keys-c64", "steps10-c1"):
        asyncio.run(http_workload(system, BY_NAME[name], 0, args))
    for event in system.revive():
        print(f"  {TITLE[system.name]} warm-up: {event}", flush=True)


def status_counts(admin: str) -> str:
    """Invocations by status (the admin's SQL over sys_invocation), or why not."""
    try:
        r = httpx.post(
            f"{admin}/query",
            json={"query": "SELECT status, count(*) AS n FROM sys_invocation GROUP BY status"},
            headers={"accept": "application/json"},
            timeout=120,
        )
        r.raise_for_status()
        rows = r.json()["rows"]
        return ", ".join(
            f"{row['status']} {row['n']}" for row in sorted(rows, key=lambda x: str(x["status"]))
        )
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return f"n/a ({type(e).__name__}: {e})"


def log_problems(system: System) -> Counter[str]:
    """Warning and error lines in the system's logs (Kafka's own log aside), by process and event."""
    found: Counter[str] = Counter()
    for proc, (directory, pattern) in system.logs.items():
        if proc == "kafka":
            continue
        lines = [
            ln for p in sorted(directory.glob(pattern)) for ln in p.read_text(errors="replace").splitlines()
        ]
        for line in lines:
            level, event = _level_and_event(line)
            if level in ("warning", "warn", "error", "critical"):
                found[f"{proc}: {level} {re.sub(r'[0-9]+', '#', event)}"] += 1
    return found


def _counts(found: Counter[str], most: int = 8) -> str:
    return "; ".join(f"{k} ×{n}" for k, n in found.most_common(most)) or "none"


def _level_and_event(line: str) -> tuple[str, str]:
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            return str(rec.get("level", "")).lower(), str(rec.get("event", ""))[:80]
    parts = line.split(None, 3)  # Restate compact: "<time> <LEVEL> <target>: <message>"
    if len(parts) >= 3 and parts[1] in ("WARN", "ERROR"):
        return parts[1].lower(), " ".join(parts[2:])[:80]
    if "Traceback" in line or line.startswith("ERROR"):
        return "error", line[:80]
    return "", ""


# --- the table -------------------------------------------------------------------------------------


def _f(x: float, digits: int = 1) -> str:
    return "–" if x != x else f"{x:.{digits}f}"  # nan -> dash


def _ms(x: float) -> str:
    return "–" if x != x else (f"{x * 1000:.1f}" if x < 10 else f"{x * 1000:.0f}")


def _mb(b: float) -> str:
    return f"{b / 2**20:.0f}"


def _valid(runs: list[Run]) -> list[Run]:
    """The runs during which no process of the system died (all of them if there are none)."""
    return [r for r in runs if not r.died] or runs


def table(runs: list[Run], workloads: list[Workload]) -> str:
    head = (
        "| workload | system | req/s median (min–max) | p50 ms | p99 ms | CPU ms/call | "
        "CPU ms/call by process | peak RSS MB (by process) | kinvoke/Restate req/s min / median / max "
        "| errors | notes |"
    )
    lines = [head, "|" + "---|" * 11]
    for wl in workloads:
        for sysname in SYSTEMS:
            mine = sorted(
                (r for r in runs if r.workload == wl.name and r.system == sysname), key=lambda r: r.round
            )
            if wl.only is not None and wl.only != sysname:
                lines.append(f"| {wl.name} | {TITLE[sysname]} | n/a | | | | | | | | not applicable |")
                continue
            if not mine:
                continue
            everything, mine = mine, _valid(mine)
            rps = [r.rps for r in mine]
            p50 = statistics.median(percentile(r.latencies, 0.5) for r in mine)
            p99 = statistics.median(percentile(r.latencies, 0.99) for r in mine)
            per_proc_runs = [r.cpu_ms_per_call() for r in mine if r.ok]
            procs = list(mine[0].cpu)
            by_proc = (
                {p: statistics.median(c[p] for c in per_proc_runs) for p in procs} if per_proc_runs else {}
            )
            total = (
                statistics.median(sum(c.values()) for c in per_proc_runs) if per_proc_runs else float("nan")
            )
            peak = {p: max(r.rss.get(p, 0) for r in mine) for p in procs}
            ratio = ""
            if sysname == "kinvoke":
                theirs = {
                    r.round: r.rps
                    for r in _valid([r for r in runs if r.workload == wl.name and r.system == "restate"])
                }
                ratios = [r.rps / theirs[r.round] for r in mine if theirs.get(r.round)]
                if ratios:
                    ratio = f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}"
                elif wl.only == "kinvoke":
                    ratio = "n/a"
            notes = []
            client = (
                statistics.median(1000 * r.client_cpu / r.ok for r in mine if r.ok) if per_proc_runs else 0
            )
            notes.append(f"client {client:.2f} ms/call")
            drains = [r.drain_s for r in mine if r.drain_s is not None]
            if drains:
                done_rps = statistics.median(r.ok / (r.seconds + (r.drain_s or 0)) for r in mine if r.ok)
                notes.append(
                    f"all sent invocations done {statistics.median(drains):.1f} s after the last 202 "
                    f"({done_rps:.0f} done/s)"
                )
            if wl.kind == "direct":
                notes.append(f"burst of {mine[0].ok + mine[0].errors}; latency = produce → result")
            if len(mine) < len(everything):
                left_out = [str(r.round) for r in everything if r.died]
                notes.append(f"round(s) {', '.join(left_out)} left out of the figures: a process died")
            notes += [f"round {r.round}: {e}" for r in everything for e in r.events]
            errors = sum(r.errors for r in everything)
            first = next((r.first_error for r in everything if r.first_error), None)
            if first:
                notes.append(f"first error: {first[:120]}".replace("|", "/"))
            rps_cell = f"{statistics.median(rps):.0f} ({min(rps):.0f}–{max(rps):.0f})"
            lines.append(
                f"| {wl.name} | {TITLE[sysname]} | {rps_cell} "
                f"| {_ms(p50)} | {_ms(p99)} | {_f(total, 2)} "
                f"| {' · '.join(f'{p} {v:.2f}' for p, v in by_proc.items())} "
                f"| {_mb(sum(peak.values()))} ({' · '.join(f'{p} {_mb(v)}' for p, v in peak.items())}) "
                f"| {ratio} | {errors} | {'; '.join(notes)} |"
            )
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------


def git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
        )
        return out.stdout.strip() or "?"
    return "?"


def _interrupt_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _progress(run: Run) -> None:
    cpu = sum(run.cpu_ms_per_call().values())
    print(
        f"  round {run.round} {run.workload:16s} {TITLE[run.system]:8s} {run.rps:8.1f} req/s  "
        f"p50 {_ms(percentile(run.latencies, 0.5)):>6} ms  p99 {_ms(percentile(run.latencies, 0.99)):>6} ms  "
        f"CPU {cpu:6.2f} ms/call  ok {run.ok}  errors {run.errors}"
        + (f"  drain {run.drain_s:.1f}s" if run.drain_s is not None else "")
        + "".join(f"  [{e}]" for e in run.events),
        flush=True,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every workload on both")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per workload run")
    parser.add_argument("--requests", type=int, help="stop a workload run after this many requests")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=list(BY_NAME),
        default=list(BY_NAME),
        metavar="NAME",
        help=f"a subset of: {', '.join(BY_NAME)}",
    )
    parser.add_argument("--send-count", type=int, default=3000, help="at most this many sends in send-c64")
    parser.add_argument("--direct-count", type=int, default=3000, help="commands produced by direct-produce")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="max seconds to wait for idle")
    parser.add_argument("--processors", type=int, default=1, help="kinvoke processors")
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="measure only these (debugging)"
    )
    parser.add_argument(
        "--sdk-max-requests",
        type=int,
        default=0,
        help="hypercorn's keep_alive_max_requests for both SDK deployments (0: no limit). Hypercorn's "
        "default, 1000, closes the deployment's HTTP/2 connection every 1000 invocations: Restate then "
        "leaves an invocation hanging until its inactivity timeout (1 min), kinvoke fails an attempt",
    )
    parser.add_argument("--restate-version", default=RESTATE_VERSION)
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) to this file")
    parser.add_argument("--keep", action="store_true", help="keep both systems' logs and data, print where")
    return parser.parse_args(argv)


def sdk_settings(args: argparse.Namespace) -> dict[str, int | str | bool]:
    """Hypercorn settings of both SDK deployments."""
    return {"keep_alive_max_requests": args.sdk_max_requests or 2**31 - 1}


def measure(
    systems: dict[str, System],
    workloads: list[Workload],
    args: argparse.Namespace,
    runs: list[Run],
    seen: dict[str, Counter[str]],
) -> None:
    """Every round: every workload on kinvoke, then on Restate; the runs go to `runs`."""
    for rnd in range(1, args.rounds + 1):
        for wl in workloads:
            for name in SYSTEMS:
                s = systems[name]
                if (wl.only is not None and wl.only != name) or s.broken or name not in args.systems:
                    continue
                try:
                    if wl.kind == "direct":
                        count = args.requests or args.direct_count
                        run = direct_workload(s, rnd, count, args.drain_timeout)
                    else:
                        run = asyncio.run(http_workload(s, wl, rnd, args))
                except Exception as e:  # noqa: BLE001 - reported in the table, the rest goes on
                    run = Run(name, wl.name, rnd, first_error=f"the run failed: {type(e).__name__}: {e}")
                wait_quiet(s.trees, s.idle, max_s=20)  # leftovers never load the next run
                run.events = s.revive()
                run.died = bool(run.events)
                if run.died:  # what piled up while a process was down must not load the next run
                    wait_quiet(s.trees, s.idle, max_s=args.drain_timeout)
                logged = log_problems(s)
                new = logged - seen[name]
                seen[name] = logged
                if new:
                    run.events.append("logged " + _counts(new, 3))
                runs.append(run)
                _progress(run)
                if s.broken:
                    print(f"  {TITLE[name]} is out of the benchmark: {s.broken}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    _interrupt_on_sigterm()
    workloads = [w for w in WORKLOADS if w.name in args.workloads]
    runs: list[Run] = []
    interrupted = False
    statuses = dict.fromkeys(SYSTEMS, "n/a (interrupted)")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        print("starting kinvoke (Apache Kafka, admin, ingress, processor, SDK deployment) ...", flush=True)
        sdk = sdk_settings(args)
        kinvoke = stack.enter_context(kinvoke_system(args.processors, args.keep, sdk))
        print(f"starting the Restate server {args.restate_version} and its SDK deployment ...", flush=True)
        restate = stack.enter_context(restate_system(args.restate_version, args.keep, sdk))
        systems = {"kinvoke": kinvoke, "restate": restate}
        for s in systems.values():
            warm_up(s, 6.0)
        for s in systems.values():
            wait_quiet(s.trees, 0.0, margin_cores=0.1, max_s=20)
            s.idle = idle_cores(s.trees)
        print(
            "idle CPU (cores): " + ", ".join(f"{TITLE[n]} {s.idle:.3f}" for n, s in systems.items()),
            flush=True,
        )
        seen = {n: log_problems(s) for n, s in systems.items()}  # start-up and warm-up: in the total
        try:
            measure(systems, workloads, args, runs, seen)
        except KeyboardInterrupt:
            interrupted = True
            print("interrupted: stopping everything, then the table of what was measured", flush=True)
        if not interrupted:
            statuses = {n: status_counts(s.admin) for n, s in systems.items()}
        problems = {n: _counts(log_problems(s)) for n, s in systems.items()}
    elapsed = time.monotonic() - started
    out = "\n".join(
        [
            f"## kinvoke vs Restate ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
            "",
            f"kinvoke {kinvoke.version} on Apache Kafka {KAFKA_VERSION} ({args.processors} processor) · "
            f"{restate.version} (npm, all roles, one node, default settings) · same SDK deployment "
            f"({APP} under hypercorn, 1 worker, keep_alive_max_requests {sdk['keep_alive_max_requests']}, "
            f"restate-sdk {_sdk_version()}) · {os.cpu_count()} cores "
            f"{platform.machine()} · {args.rounds} rounds × {args.duration:g} s per workload "
            f"(+{args.warmup:g} s warm-up){f', at most {args.requests} requests' if args.requests else ''} · "
            f"idle CPU: {', '.join(f'{TITLE[n]} {s.idle:.2f} cores' for n, s in systems.items())} · "
            f"run took {elapsed / 60:.1f} min{' (INTERRUPTED)' if interrupted else ''}",
            "",
            table(runs, workloads),
            "",
            "CPU ms/call: CPU time of the process (and its children) during the measured phase divided by "
            "the calls completed; medians over rounds. Peak RSS: max over rounds of the sampled RSS.",
            "",
            "Invocations by status at the end: "
            + " · ".join(f"{TITLE[n]}: {v}" for n, v in statuses.items()),
            "",
            "Warnings/errors in the logs: " + " · ".join(f"{TITLE[n]}: {v}" for n, v in problems.items()),
            "",
        ]
    )
    print()
    print(out, flush=True)
    if args.out:
        args.out.write_text(out)


def _sdk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("restate-sdk")
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        sys.exit(130)
