"""A whole kinvoke stack as OS processes, for fault tests: admin, ingress, several processors,
an SDK deployment on a fixed port (so it can be stopped and started again), plus the helpers
fault tests share: waiting with a bound while watching for dead processes, reading the
processors' JSON logs, a ledger workload whose clients retry with idempotency keys, quiescence
and `kinvoke replay --verify`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, TopicPartition

from kafka_core.kafka import client_config, create_topics
from schemas.ids import InvocationId, partition_key_of
from schemas.partitioner import partition_of
from schemas.settings import Settings
from schemas.topics import Topics
from tests.support.processes import REPO, Component, wait_for_port

LEDGER_APP = "examples.python.ledger:app"
RETRYABLE_STATUS = {503, 504}  # the ingress's "try again" answers


class StackError(AssertionError):
    """A process died or a bounded wait ran out; the message carries the relevant logs."""


class StackTimeout(StackError):
    """A bounded wait ran out (every process still alive)."""


def free_port() -> int:
    from tests.conftest import free_port as _free_port

    return _free_port()


NOISE = ("kafka.client_log", "kafka.client_error", "attempt.ended")


def tail(text: str, lines: int = 60) -> str:
    """The last lines of a log, without librdkafka's own lines and per-attempt or client noise."""
    kept = [ln for ln in text.splitlines() if not ln.startswith("%") and not any(n in ln for n in NOISE)]
    return "\n".join(kept[-lines:])


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    """The structured log events in a component's output (librdkafka's own lines are skipped)."""
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                yield json.loads(line)


# -- the SDK deployment ----------------------------------------------------------------------------


@dataclass
class SdkDeployment:
    """hypercorn serving `app` on a fixed port: stopped (or killed) and started again on the same
    port, the registered deployment URI stays valid."""

    log_dir: Path
    app: str = LEDGER_APP
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> SdkDeployment:
        self.starts += 1
        log = open(self.log_dir / f"deployment-{self.starts}.log", "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hypercorn", self.app, "--bind", f"127.0.0.1:{self.port}"],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # killed as a group: no worker left holding the port
            )
        finally:
            log.close()
        wait_for_port("127.0.0.1", self.port, timeout_s, self.proc)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if not self.running():
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("deployment-*.log")))


# -- the stack -------------------------------------------------------------------------------------


@dataclass
class Stack:
    """admin + ingress + processors + an SDK deployment on one topic prefix.

    `processors` maps a processor's name to its KINVOKE_STATE_DIR (relative to `base`): give two
    processors the same directory to have them share it (separate slots)."""

    bootstrap: str
    prefix: str
    base: Path
    partitions: int = 8
    processors: dict[str, str] = field(default_factory=lambda: {"p1": "state", "p2": "state"})
    env_extra: dict[str, str] = field(default_factory=dict)
    app: str = LEDGER_APP
    use_http_11: bool = False  # register the deployment for HTTP/1.1 instead of HTTP/2
    processor_env: dict[str, str] = field(default_factory=dict)  # over `env`, for processors only

    def __post_init__(self) -> None:
        self.admin_port, self.ingress_port = free_port(), free_port()
        self.env = {
            "KINVOKE_BOOTSTRAP_SERVERS": self.bootstrap,
            "KINVOKE_TOPIC_PREFIX": self.prefix,
            "KINVOKE_PARTITIONS": str(self.partitions),
            "KINVOKE_ADMIN_PORT": str(self.admin_port),
            "KINVOKE_INGRESS_PORT": str(self.ingress_port),
            "KINVOKE_STATE_DIR": str(self.base / "state-admin"),
            **self.env_extra,
        }
        self.settings = Settings(
            bootstrap_servers=self.bootstrap, topic_prefix=self.prefix, partitions=self.partitions
        )
        self.topics = Topics(self.prefix)
        self.admin = Component("admin", self.env, self._dir("admin"), self.admin_port)
        self.ingress = Component("ingress", self.env, self._dir("ingress"), self.ingress_port)
        self.procs: dict[str, Component] = {
            name: Component(
                "processor",
                {**self.env, "KINVOKE_STATE_DIR": str(self.base / state), **self.processor_env},
                self._dir(name),
            )
            for name, state in self.processors.items()
        }
        self.deployment = SdkDeployment(self._dir("deployment"), self.app)
        self.deployment_id: str | None = None
        # Components that may be down right now (stopped on purpose): not reported as dead.
        self.expected_down: set[str] = set()

    def _dir(self, name: str) -> Path:
        d = self.base / "logs" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    def components(self) -> dict[str, Component]:
        return {"admin": self.admin, "ingress": self.ingress, **self.procs}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 90.0, register: bool = True) -> Stack:
        """Topics, deployment, admin, ingress and processors up; the deployment registered unless
        the test registers it itself."""
        create_topics(self.settings)
        self.deployment.start()
        self.admin.start(timeout_s)
        self.ingress.start(timeout_s)
        for name in self.procs:
            self.start_processor(name, timeout_s)
        if register:
            self.register()
        return self

    def stop(self) -> None:
        """Everything down, whatever state it is in (a SIGSTOPped process is continued first)."""
        for c in self.components().values():
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGCONT)
        for name in self.procs:
            self.procs[name].stop()
        self.ingress.stop()
        self.admin.stop()
        self.deployment.stop()

    def start_processor(self, name: str, timeout_s: float = 60.0) -> None:
        proc = self.procs[name]
        proc.start()
        self.expected_down.discard(name)
        self.wait_until(
            lambda: any(e.get("event") == "processor.started" for e in self.events(name)),
            timeout_s,
            f"{name} to start",
        )

    def register(self, timeout_s: float = 60.0) -> None:
        with httpx.Client(timeout=30) as client:
            body = {"uri": self.deployment.uri, **({"use_http_11": True} if self.use_http_11 else {})}
            reg = client.post(f"{self.admin_url}/deployments", json=body)
            assert reg.status_code in (200, 201), reg.text
            self.deployment_id = reg.json()["id"]
            services = {s["name"] for s in reg.json()["services"]}

            def registered() -> bool:
                try:
                    health = client.get(f"{self.ingress_url}/restate/health")
                except httpx.HTTPError:
                    return False
                return health.status_code == 200 and services <= set(health.json()["services"])

            self.wait_until(registered, timeout_s, "the ingress to know the registered services")

    # -- watching ----------------------------------------------------------------------------

    def dead(self) -> dict[str, Component]:
        return {
            name: c
            for name, c in self.components().items()
            if name not in self.expected_down and c.proc is not None and c.proc.poll() is not None
        }

    def check_alive(self) -> None:
        dead = self.dead()
        if not dead and (self.deployment.running() or "deployment" in self.expected_down):
            return
        parts = [
            f"{name} exited with {c.proc.returncode if c.proc else '?'}; its log ends with:\n"
            f"{tail(c.log_text())}"
            for name, c in dead.items()
        ]
        if not self.deployment.running() and "deployment" not in self.expected_down:
            parts.append(f"the deployment exited; its log ends with:\n{tail(self.deployment.log_text())}")
        raise StackError("\n\n".join(parts))

    def wait_until(
        self, cond: Callable[[], Any], timeout_s: float, what: str | Callable[[], str], every_s: float = 0.2
    ) -> Any:
        """Poll `cond` until it is truthy (returned), failing fast if a process died. `what` (or
        what it returns, when the wait times out) says what was awaited."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                said = what() if callable(what) else what
                raise StackTimeout(f"timed out after {timeout_s}s waiting for {said}\n{self.log_tails()}")
            time.sleep(every_s)

    def log_tails(self, lines: int = 25) -> str:
        out = [f"--- {name}:\n{tail(c.log_text(), lines)}" for name, c in self.components().items()]
        return "\n".join(out)

    def current_log(self, name: str) -> str:
        c = self.components()[name]
        path = c.log_dir / f"{c.name}-{c.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def events(self, name: str, current: bool = True) -> list[dict[str, Any]]:
        """`name`'s log events (of its current run, or of all of its runs)."""
        text = self.current_log(name) if current else self.components()[name].log_text()
        return list(json_lines(text))

    def owned(self, name: str) -> set[int]:
        """The partitions processor `name` owns as its log says (its latest assignment event)."""
        owned: set[int] = set()
        for e in self.events(name):
            if e.get("event") in ("tasks.assigned", "tasks.revoked", "tasks.lost"):
                owned = set(e.get("owned", []))
        return owned

    # -- faults ------------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL a component (no clean shutdown)."""
        self.expected_down.add(name)
        self.components()[name].kill()

    def terminate(self, name: str) -> None:
        """SIGTERM a component and wait for it to exit (a clean shutdown)."""
        self.expected_down.add(name)
        self.components()[name].stop()

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        if name in self.procs:
            self.start_processor(name, timeout_s)
        else:
            self.components()[name].start(timeout_s)
            self.expected_down.discard(name)

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.components()[name].proc
        assert proc is not None and proc.poll() is None, f"{name} is not running"
        proc.send_signal(sig)

    # -- keys and partitions -----------------------------------------------------------------

    def partition_of_key(self, key: str) -> int:
        return partition_of(partition_key_of(key), self.partitions)

    def keys_per_partition(self, prefix: str, per_partition: int) -> dict[int, list[str]]:
        """Object keys `{prefix}-{n}`, `per_partition` of them on every partition."""
        keys: dict[int, list[str]] = {p: [] for p in range(self.partitions)}
        n = 0
        while any(len(v) < per_partition for v in keys.values()):
            key = f"{prefix}-{n}"
            p = self.partition_of_key(key)
            if len(keys[p]) < per_partition:
                keys[p].append(key)
            n += 1
        return keys

    def wait_all_partitions_answer(self, timeout_s: float, what: str = "every partition to answer") -> float:
        """A shared-handler read on a key of every partition answers; returns the seconds taken.
        The partitions still silent are probed in parallel, each read bounded by a few seconds."""
        started = time.monotonic()
        probes = {p: ks[0] for p, ks in self.keys_per_partition("probe", 1).items()}
        pending = set(probes)
        with httpx.Client(timeout=5) as client, ThreadPoolExecutor(len(probes)) as pool:

            def read(p: int) -> bool:
                try:
                    return client.post(f"{self.ingress_url}/Ledger/{probes[p]}/read").status_code == 200
                except httpx.HTTPError:
                    return False

            def answered() -> bool:
                for p, ok in zip(sorted(pending), pool.map(read, sorted(pending)), strict=True):
                    if ok:
                        pending.discard(p)
                return not pending

            self.wait_until(
                answered, timeout_s, lambda: f"{what} (still silent: partitions {sorted(pending)})"
            )
        return time.monotonic() - started

    # -- introspection, quiescence, replay -------------------------------------------------------

    def query(self, sql: str) -> list[dict[str, Any]]:
        r = httpx.post(
            f"{self.admin_url}/query",
            json={"query": sql},
            headers={"accept": "application/json"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.json()["rows"]

    def unconsumed(self) -> dict[int, int]:
        """Per partition of `commands`, how many committed records lie past the processors'
        committed offset (records no processor has applied yet)."""
        consumer = Consumer(
            client_config(
                self.settings,
                **{
                    "group.id": self.settings.processor_group,  # never subscribes: never joins
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                },
            )
        )
        try:
            tps = [TopicPartition(self.topics.commands, p) for p in range(self.partitions)]
            committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=15)}
            starts = []
            for p, offset in committed.items():
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topics.commands, p), timeout=15, cached=False
                )
                start = offset if offset >= 0 else low
                if high > start:
                    starts.append(TopicPartition(self.topics.commands, p, start))
            left = {tp.partition: 0 for tp in starts}
            if not starts:
                return {}
            consumer.assign(starts)
            at_eof: set[int] = set()
            deadline = time.monotonic() + 30
            while len(at_eof) < len(starts) and time.monotonic() < deadline:
                for msg in consumer.consume(500, 0.2):
                    err, part = msg.error(), msg.partition()
                    assert part is not None
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            at_eof.add(part)
                        continue
                    left[part] += 1
            return {p: n for p, n in left.items() if n}
        finally:
            consumer.close()

    def wait_quiesced(self, timeout_s: float = 60.0) -> None:
        """Until the processors have applied every record of `commands`."""
        self.wait_until(lambda: not self.unconsumed(), timeout_s, "the processors to apply all commands")

    def replay_verify(self, timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
        """`kinvoke replay --verify` with this stack's settings (run it with processors stopped)."""
        return subprocess.run(
            [sys.executable, "-m", "kinvoke.cli", "replay", "--verify"],
            cwd=REPO,
            env={**os.environ, **self.env, "PYTHONPATH": str(REPO), "KINVOKE_LOG_FORMAT": "json"},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def stop_processors_and_verify(self) -> float:
        """Quiesce, stop the processors cleanly, and check `kinvoke replay --verify`; returns its
        duration in seconds."""
        self.wait_quiesced()
        for name in self.procs:
            self.terminate(name)
        started = time.monotonic()
        out = self.replay_verify()
        took = time.monotonic() - started
        assert out.returncode == 0 and "OK, identical to the changelog" in out.stdout, (
            f"kinvoke replay --verify failed (exit {out.returncode}):\n{tail(out.stdout, 80)}\n"
            f"{tail(out.stderr, 40)}"
        )
        return took


@contextlib.contextmanager
def running_stack(stack: Stack, register: bool = True) -> Iterator[Stack]:
    """`stack` started, and stopped whatever happens."""
    try:
        yield stack.start(register=register)
    finally:
        stack.stop()


@contextlib.contextmanager
def module_stack(
    bootstrap: str, base: Path, app: str, *, partitions: int = 2, register: bool = True, **kw: Any
) -> Iterator[Stack]:
    """One stack for a whole test module: its own topic prefix, one processor named "processor",
    `app` as the deployment; `kw` are more `Stack` fields."""
    stack = Stack(
        bootstrap,
        f"t{uuid.uuid4().hex[:10]}",
        base,
        partitions=partitions,
        processors={"processor": "state"},
        app=app,
        **kw,
    )
    with running_stack(stack, register=register) as running:
        yield running


@dataclass
class StackClient:
    """A started stack and one HTTP client: what a module's tests share."""

    stack: Stack
    client: httpx.Client

    @property
    def admin(self) -> str:
        return self.stack.admin_url

    @property
    def ingress(self) -> str:
        return self.stack.ingress_url

    @property
    def deployment(self) -> SdkDeployment:
        return self.stack.deployment

    def until(self, check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> None:
        self.stack.wait_until(check, timeout_s, what, every_s=0.1)

    def post(self, path: str, body: object, **headers: str) -> httpx.Response:
        """A JSON request to the ingress."""
        headers = {"content-type": "application/json", **headers}
        return self.client.post(f"{self.ingress}{path}", content=json.dumps(body), headers=headers)

    def get(self, path: str, timeout: float | None = 60) -> httpx.Response:
        return self.client.get(f"{self.ingress}{path}", timeout=timeout)


# -- the ledger workload ---------------------------------------------------------------------------


@dataclass
class Op:
    """One logical operation on a ledger key: a call (`apply`) or a one-way send (`apply/send`)."""

    id: str
    key: str
    amount: int
    send: bool
    sleep_ms: int = 0
    requests: int = 0
    answer: Any = None  # the JSON answer once there is one
    answered_at: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def invocation_id(self) -> str:
        return str(InvocationId.for_idempotent_request("Ledger", self.key, "apply", self.id))


class LedgerWorkload:
    """Clients applying operations to Ledger objects through the ingress, each with its own
    idempotency key: a client that gets an error or no answer sends the same request again, with
    the same key, until it gets an answer. Unexpected answers (neither success nor 503/504) are
    kept in `anomalies`."""

    def __init__(
        self,
        ingress_url: str,
        keys: list[str],
        *,
        workers: int = 4,
        pace_s: float = 0.5,
        send_every: int = 4,
        op_deadline_s: float = 180.0,
        request_timeout_s: float = 15.0,
        seed: int = 7,
    ) -> None:
        self.ingress_url = ingress_url
        self.keys = keys
        self.workers = workers
        self.pace_s = pace_s
        self.send_every = send_every
        self.op_deadline_s = op_deadline_s
        self.request_timeout_s = request_timeout_s
        self.seed = seed
        self.ops: list[Op] = []
        self.anomalies: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- running -------------------------------------------------------------------------------

    def start(self) -> LedgerWorkload:
        for w in range(self.workers):
            t = threading.Thread(target=self._worker, args=(w,), name=f"ledger-{w}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """No new operations; wait for the ones under way to be answered (or to give up)."""
        self._stop.set()
        deadline = time.monotonic() + (timeout_s or self.op_deadline_s + 30)
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))

    def abort(self) -> None:
        """Give up at once (a failing test): no operation is sent again."""
        self._abort.set()
        self._stop.set()

    def answered(self) -> int:
        with self._lock:
            return sum(1 for op in self.ops if op.answer is not None)

    def _worker(self, w: int) -> None:
        import random

        rnd = random.Random(self.seed * 1000 + w)
        n = 0
        with httpx.Client(timeout=self.request_timeout_s) as client:
            while not self._stop.is_set():
                n += 1
                op = Op(
                    id=f"op-{w}-{n}-{uuid.uuid4().hex[:8]}",
                    key=rnd.choice(self.keys),
                    amount=rnd.randint(1, 1000),
                    send=n % self.send_every == 0,
                )
                self.run(op, client)
                self._stop.wait(self.pace_s)

    def run(self, op: Op, client: httpx.Client | None = None) -> Op:
        """Send `op` until it is answered (or its deadline passes)."""
        with self._lock:
            self.ops.append(op)
        own = client is None
        client = client or httpx.Client(timeout=self.request_timeout_s)
        path = f"/Ledger/{op.key}/apply" + ("/send" if op.send else "")
        body: dict[str, Any] = {"id": op.id, "amount": op.amount}
        if op.sleep_ms:
            body["sleep_ms"] = op.sleep_ms
        headers = {"content-type": "application/json", "idempotency-key": op.id}
        deadline = time.monotonic() + self.op_deadline_s
        delay = 0.1
        try:
            while time.monotonic() < deadline and not self._abort.is_set():
                op.requests += 1
                try:
                    r = client.post(self.ingress_url + path, content=json.dumps(body), headers=headers)
                except httpx.HTTPError as e:
                    op.errors.append(type(e).__name__)
                else:
                    if r.status_code == (202 if op.send else 200):
                        op.answer = r.json()
                        op.answered_at = time.monotonic()
                        return op
                    op.errors.append(str(r.status_code))
                    if r.status_code not in RETRYABLE_STATUS:
                        with self._lock:
                            self.anomalies.append(f"{op.id} {path}: {r.status_code} {r.text[:300]}")
                self._abort.wait(delay)
                delay = min(delay * 2, 1.0)
            return op
        finally:
            if own:
                client.close()

    def run_async(self, op: Op) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(op,), daemon=True)
        t.start()
        self._threads.append(t)
        return t

    # -- checking --------------------------------------------------------------------------------

    def expected(self) -> dict[str, list[Op]]:
        by_key: dict[str, list[Op]] = {}
        for op in self.ops:
            by_key.setdefault(op.key, []).append(op)
        return by_key

    def read_ledgers(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        with httpx.Client(timeout=30) as client:
            for key in keys:
                r = client.post(f"{self.ingress_url}/Ledger/{key}/read")
                assert r.status_code == 200, f"reading ledger {key}: {r.status_code} {r.text}"
                out[key] = r.json()
        return out

    def problems(self, ledgers: dict[str, dict[str, Any]]) -> list[str]:
        """What is wrong with the ledgers given the operations (empty: exactly once, nothing lost)."""
        problems = [
            f"{op.id} on {op.key} never answered ({op.errors[-5:]})" for op in self.ops if not op.answer
        ]
        for key, ops in self.expected().items():
            ledger = ledgers.get(key, {"balance": 0, "ops": []})
            applied: list[str] = ledger["ops"]
            seen = set(applied)
            if len(seen) != len(applied):
                dups = sorted({i for i in applied if applied.count(i) > 1})
                problems.append(f"ledger {key}: applied twice: {dups}")
            missing = sorted({op.id for op in ops} - seen)
            if missing:
                problems.append(f"ledger {key}: never applied: {missing}")
            unknown = sorted(seen - {op.id for op in ops})
            if unknown:
                problems.append(f"ledger {key}: applied but never sent: {unknown}")
            total = sum(op.amount for op in ops)
            if ledger["balance"] != total:
                problems.append(
                    f"ledger {key}: balance {ledger['balance']} != {total}, the sum of its operations"
                )
            for op in ops:
                if op.send or not op.answer:
                    continue
                pos = op.answer["position"]
                if not (1 <= pos <= len(applied)) or applied[pos - 1] != op.id:
                    problems.append(f"ledger {key}: {op.id} answered position {pos}, not where it is applied")
        return problems

    def wait_settled(self, stack: Stack, timeout_s: float = 90.0) -> dict[str, dict[str, Any]]:
        """Until every answered send is applied too (sends are answered before they run); returns
        the ledgers as last read."""
        keys = sorted(self.expected())
        last: dict[str, dict[str, Any]] = {}

        def settled() -> bool:
            nonlocal last
            last = self.read_ledgers(keys)
            want = self.expected()
            return all({op.id for op in want[k]} <= set(last[k]["ops"]) for k in keys)

        with contextlib.suppress(StackTimeout):
            stack.wait_until(settled, timeout_s, "every send to be applied", every_s=1.0)
        return last

    def summary(self) -> str:
        calls = sum(1 for op in self.ops if not op.send)
        sends = len(self.ops) - calls
        retried = sum(1 for op in self.ops if op.requests > 1)
        requests = sum(op.requests for op in self.ops)
        return (
            f"{len(self.ops)} operations ({calls} calls, {sends} sends) on {len(self.expected())} keys, "
            f"{requests} requests, {retried} operations needed more than one"
        )
