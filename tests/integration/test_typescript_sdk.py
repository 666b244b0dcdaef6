"""The Restate TypeScript SDK (`@restatedev/restate-sdk` 1.17.2 on Node 22) against kinvoke: register
its deployment, call it through the ingress, `ctx.run`, a durable sleep (across a restart of the
Node process), a virtual object's state, a workflow, terminal errors, a retried `ctx.run`,
awakeables, cancel, delayed sends, and calls between a TypeScript and a Python service both ways —
real broker, admin/ingress/processor as separate processes.

The services are tests/ts_services/services.cjs (TypeScript SDK) and tests/ts_services/py_services.py
(Python SDK). Node 22 and the SDK are installed pinned by ./scripts/setup.sh into .kinvoke/node-sdk/;
without them these tests are skipped, except in CI (`CI` set), where that is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from kafka_core.kafka import create_topics
from schemas.ids import InvocationId, awakeable_id
from schemas.settings import Settings
from tests.conftest import free_port
from tests.support.processes import REPO, Component, wait_for_port
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration

SDK_VERSION = "1.17.2"
NODE_SDK = REPO / ".kinvoke" / "node-sdk"
NODE = NODE_SDK / "node_modules" / "node" / "bin" / "node"
SERVICES = REPO / "tests" / "ts_services" / "services.cjs"
PY_APP = "tests.ts_services.py_services:app"
PARTITIONS = 4


def node_or_skip() -> Path:
    """The Node 22 binary setup.sh installed; skips without it (fails in CI, where it must run)."""
    installed = (NODE_SDK / "node_modules" / "@restatedev" / "restate-sdk" / "package.json").exists()
    if NODE.exists() and installed:
        return NODE
    reason = (
        f"Node 22 and @restatedev/restate-sdk {SDK_VERSION} are not installed in .kinvoke/node-sdk/ "
        "(./scripts/setup.sh installs them with npm; its output says why it could not)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the TypeScript SDK tests: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class NodeDeployment:
    """services.cjs under Node 22 on a fixed port, so it can be stopped and started again."""

    node: Path
    log_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        self.starts += 1
        log = self.log_dir / f"node-{self.starts}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(self.node), str(SERVICES), str(self.port)],
                cwd=REPO,
                env={**os.environ, "NODE_PATH": str(NODE_SDK / "node_modules")},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port("127.0.0.1", self.port, timeout_s, self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise AssertionError(f"the TypeScript deployment did not start: {e}\n{self.log_text()}") from e

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("node-*.log")))


@dataclass
class Kinvoke:
    admin: str
    ingress: str
    client: httpx.Client
    node: NodeDeployment
    registrations: dict[str, dict[str, Any]]  # "ts" / "python": the POST /deployments answer
    components: list[Component]

    def call(self, path: str, body: object = None) -> httpx.Response:
        content = b"" if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if body is not None else {}
        return self.client.post(f"{self.ingress}/{path}", content=content, headers=headers, timeout=60)

    def ok(self, path: str, body: object = None) -> Any:
        r = self.call(path, body)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}\n{self.logs()}"
        return r.json()

    def query(self, sql: str) -> list[dict[str, Any]]:
        r = self.client.post(
            f"{self.admin}/query", json={"query": sql}, headers={"accept": "application/json"}
        )
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["rows"]
        return rows

    def until(self, what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"{what} after {timeout_s}s\n{self.logs()}"
            time.sleep(0.1)

    def logs(self) -> str:
        parts = [f"--- node ---\n{self.node.log_text()[-3000:]}"]
        parts += [f"--- {c.name} ---\n{c.log_text()[-3000:]}" for c in self.components]
        return "\n".join(parts)


@pytest.fixture(scope="module")
def node() -> Path:
    return node_or_skip()  # before the broker starts: a skip costs nothing


@pytest.fixture(scope="module")
def kinvoke(node: Path, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kinvoke]:
    base = tmp_path_factory.mktemp("typescript")
    prefix = f"ts{os.urandom(5).hex()}"
    admin_port, ingress_port = free_port(), free_port()
    env = {
        "KINVOKE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KINVOKE_TOPIC_PREFIX": prefix,
        "KINVOKE_PARTITIONS": str(PARTITIONS),
        "KINVOKE_ADMIN_PORT": str(admin_port),
        "KINVOKE_INGRESS_PORT": str(ingress_port),
        "KINVOKE_STATE_DIR": str(base / "state"),
    }
    create_topics(Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=PARTITIONS))
    parts = [
        Component("admin", env, base, admin_port),
        Component("ingress", env, base, ingress_port),
        Component("processor", env, base),
    ]
    ts = NodeDeployment(node, base)
    try:
        for c in parts:
            c.start(90)
        ts.start()
        with (
            run_sdk_deployment(PY_APP, log=base / "python.log") as py_uri,
            httpx.Client(timeout=30) as client,
        ):
            admin, ingress = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{ingress_port}"
            regs = {}
            for name, uri in (("ts", ts.uri), ("python", py_uri)):
                reg = client.post(f"{admin}/deployments", json={"uri": uri})
                assert reg.status_code == 201, f"registering {uri}: {reg.status_code} {reg.text}"
                regs[name] = reg.json()
            k = Kinvoke(admin, ingress, client, ts, regs, parts)
            wanted = {"TsGreeter", "TsCounter", "TsSignup", "PyBridge"}
            k.until(
                "the ingress knows the services",
                lambda: wanted <= set(client.get(f"{ingress}/restate/health").json()["services"]),
            )
            yield k
    finally:
        ts.stop()
        for c in parts:
            c.stop()


def journal(k: Kinvoke, invocation_id: str) -> list[dict[str, Any]]:
    return k.query(
        f"SELECT index, entry_type, name FROM sys_journal WHERE id = '{invocation_id}' ORDER BY index"
    )


def test_registration_discovers_the_typescript_services(kinvoke: Kinvoke) -> None:
    k = kinvoke
    reg = k.registrations["ts"]
    assert reg["id"].startswith("dp_")
    assert (reg["min_protocol_version"], reg["max_protocol_version"]) == (5, 7)
    assert reg["sdk_version"] == f"restate-sdk-typescript/{SDK_VERSION}"
    services = {s["name"]: s for s in reg["services"]}
    assert set(services) == {"TsGreeter", "TsCounter", "TsSignup"}
    assert services["TsGreeter"]["ty"] == "Service"
    assert {h["name"] for h in services["TsGreeter"]["handlers"]} == {
        "greet",
        "steps",
        "nap",
        "fail",
        "flakyRun",
        "waitFor",
        "addLater",
        "callPython",
    }
    assert services["TsCounter"]["ty"] == "VirtualObject"
    kinds = {h["name"]: h["ty"] for h in services["TsCounter"]["handlers"]}
    assert kinds == {"add": "Exclusive", "reset": "Exclusive", "get": "Shared"}
    assert services["TsSignup"]["ty"] == "Workflow"
    kinds = {h["name"]: h["ty"] for h in services["TsSignup"]["handlers"]}
    assert kinds == {"run": "Workflow", "confirm": "Shared", "status": "Shared"}

    # The admin API shows it as an HTTP/2 (h2c, the TS SDK's `listen`) bidi-stream deployment.
    dep = k.client.get(f"{k.admin}/deployments/{reg['id']}").json()
    assert dep["uri"].rstrip("/") == k.node.uri
    assert dep["http_version"] == "HTTP/2.0"
    assert dep["protocol_type"] == "BidiStream"
    assert {s["name"] for s in k.client.get(f"{k.admin}/services").json()["services"]} >= {
        "TsGreeter",
        "TsCounter",
        "PyBridge",
    }


def test_call_and_ctx_run(kinvoke: Kinvoke) -> None:
    k = kinvoke
    assert k.ok("TsGreeter/greet", "Ada") == "Hello Ada from TypeScript"

    r = k.call("TsGreeter/steps", 5)
    assert r.status_code == 200, r.text
    assert r.json() == 11  # 5 + 1 + 2 + 3, each step a journaled ctx.run
    inv = r.headers["x-restate-id"]
    # SQL reads the admin's changelog view, which follows the call a moment later.
    expected = [("Command: Run", "step-1"), ("Command: Run", "step-2"), ("Command: Run", "step-3")]
    k.until(
        "the runs in sys_journal",
        lambda: (
            [(e["entry_type"], e["name"]) for e in journal(k, inv) if e["entry_type"] == "Command: Run"]
            == expected
        ),
    )


def test_durable_sleep_survives_a_restart_of_the_node_process(kinvoke: Kinvoke) -> None:
    k = kinvoke
    # A plain call: the timer fires and the handler resumes.
    started = time.monotonic()
    rested = k.ok("TsGreeter/nap", 1000)
    assert rested["millis"] == 1000 and rested["elapsed"] >= 1000
    assert time.monotonic() - started >= 1.0

    # A sleep that outlives the deployment process: the timer is kinvoke's, not Node's.
    sent = k.call("TsGreeter/nap/send", 4000)
    assert sent.status_code == 202, sent.text
    inv = sent.json()["invocationId"]
    k.until(
        "the invocation sleeps", lambda: any(e["entry_type"] == "Command: Sleep" for e in journal(k, inv))
    )
    k.node.stop()
    k.node.start()
    attached = k.client.get(f"{k.ingress}/restate/invocation/{inv}/attach", timeout=60)
    assert attached.status_code == 200, f"{attached.text}\n{k.logs()}"
    assert attached.json()["millis"] == 4000 and attached.json()["elapsed"] >= 4000
    assert k.node.starts == 2 and "Restate SDK started listening" in k.node.log_text()


def test_virtual_object_state(kinvoke: Kinvoke) -> None:
    k = kinvoke
    assert k.ok("TsCounter/alice/add", 2) == 2
    assert k.ok("TsCounter/alice/add", 3) == 5
    assert k.ok("TsCounter/bob/add", 7) == 7
    assert k.ok("TsCounter/alice/get") == 5
    assert k.ok("TsCounter/bob/get") == 7
    assert k.ok("TsCounter/nobody/get") == 0

    def stored() -> dict[tuple[str, str], Any]:
        rows = k.query(
            "SELECT service_key, key, value_utf8 FROM state WHERE service_name = 'TsCounter' "
            "AND service_key IN ('alice', 'bob', 'nobody') ORDER BY service_key, key"
        )
        return {(r["service_key"], r["key"]): json.loads(r["value_utf8"]) for r in rows}

    expected = {
        ("alice", "count"): 5,
        ("alice", "history"): [2, 3],
        ("bob", "count"): 7,
        ("bob", "history"): [7],
    }
    k.until("the objects' state in SQL", lambda: stored() == expected)


def test_workflow_with_a_durable_promise(kinvoke: Kinvoke) -> None:
    k = kinvoke
    sent = k.call("TsSignup/ann/run/send", "ann@example.com")
    assert sent.status_code == 202 and sent.json()["status"] == "Accepted", sent.text
    k.until("the workflow waits", lambda: k.ok("TsSignup/ann/status") == "awaiting-confirmation")
    assert k.ok("TsSignup/ann/confirm", "1234") == "resolved"
    done = k.client.get(f"{k.ingress}/restate/workflow/TsSignup/ann/attach", timeout=30)
    assert done.status_code == 200, done.text
    assert done.json() == {"email": "ann@example.com", "confirmedWith": "1234", "key": "ann"}
    assert k.ok("TsSignup/ann/status") == "confirmed"
    again = k.call("TsSignup/ann/run/send", "other@example.com")  # once per key
    assert again.json() == {"invocationId": sent.json()["invocationId"], "status": "PreviouslyAccepted"}


def test_errors_retries_awakeables_cancel_and_delayed_sends(kinvoke: Kinvoke) -> None:
    k = kinvoke
    # A TerminalError's code and message reach the caller; no retry.
    failed = k.call("TsGreeter/fail", "no luck")
    assert failed.status_code == 418
    assert failed.json() == {"code": 418, "message": "no luck", "source": "invocation"}

    # A ctx.run action that throws is retried (new attempts, replaying the journal) until it works.
    assert k.ok("TsGreeter/flakyRun", 3) == 3
    log = k.node.log_text()
    assert "try 1 of 3 fails" in log and "try 2 of 3 fails" in log and "try 3 of 3" not in log

    # An awakeable resolved through the ingress (the SDK's first awakeable is signal 17).
    waiting = k.call("TsGreeter/waitFor/send", "Ann").json()["invocationId"]
    resolved = k.client.post(
        f"{k.ingress}/restate/awakeables/{awakeable_id(InvocationId.parse(waiting).to_bytes(), 17)}/resolve",
        content=b'"approved"',
    )
    assert resolved.status_code == 202, resolved.text
    attached = k.client.get(f"{k.ingress}/restate/invocation/{waiting}/attach", timeout=30)
    assert attached.status_code == 200 and attached.json() == "Ann: approved"

    # Cancelling an invocation that waits: the cancel signal reaches the SDK on its open stream.
    doomed = k.call("TsGreeter/waitFor/send", "Bea").json()["invocationId"]
    k.until(
        "the invocation runs",
        lambda: (
            k.query(f"SELECT status FROM sys_invocation WHERE id = '{doomed}'") == [{"status": "running"}]
        ),
    )
    assert k.client.patch(f"{k.admin}/invocations/{doomed}/cancel").status_code == 202
    cancelled = k.client.get(f"{k.ingress}/restate/invocation/{doomed}/attach", timeout=30)
    assert cancelled.status_code == 409, cancelled.text
    # The SDK's CancelledError (its own message, code 409) ends the invocation.
    assert cancelled.json() == {"code": 409, "message": "Cancelled", "source": "invocation"}

    # A delayed one-way send from TypeScript to a virtual object.
    started = time.monotonic()
    assert k.ok("TsGreeter/addLater", {"key": "dave", "delta": 4, "millis": 700}) == "sent"
    early = k.ok("TsCounter/dave/get")
    assert early == 0 or time.monotonic() - started >= 0.7, "the delayed send arrived before its delay"
    k.until("the delayed add", lambda: k.ok("TsCounter/dave/get") == 4)
    assert time.monotonic() - started >= 0.7

    # stateKeys + clearAll: the state is gone, in the object and in SQL.
    assert k.ok("TsCounter/dave/reset") == ["count", "history"]
    assert k.ok("TsCounter/dave/get") == 0
    k.until(
        "the cleared state in SQL",
        lambda: (
            k.query("SELECT key FROM state WHERE service_name = 'TsCounter' AND service_key = 'dave'") == []
        ),
    )


def test_typescript_calls_python_and_python_calls_typescript(kinvoke: Kinvoke) -> None:
    k = kinvoke
    r = k.call("TsGreeter/callPython", "Bo")
    assert r.status_code == 200, r.text
    assert r.json() == "TypeScript got: Hello Bo from Python"
    # The call is a journaled Call command in the TypeScript invocation, targeting the Python one.
    inv = r.headers["x-restate-id"]
    calls_sql = f"SELECT entry_json FROM sys_journal WHERE id = '{inv}' AND entry_type = 'Command: Call'"
    k.until("the Call command in sys_journal", lambda: len(k.query(calls_sql)) == 1)
    [call] = k.query(calls_sql)
    request = json.loads(call["entry_json"])["Command"]["Call"]["request"]
    assert request["invocation_target"] == {
        "Service": {"name": "PyBridge", "handler": "greet", "scope": None}
    }
    assert bytes(request["parameter"]) == b'"Bo"'

    assert k.ok("PyBridge/call_ts", "Cy") == "Python got: Hello Cy from TypeScript"
    # Half a megabyte each way, through both SDKs (HTTP/2 flow control on every hop).
    big = "x" * 500_000
    assert k.ok("TsGreeter/callPython", big) == f"TypeScript got: Hello {big} from Python"
    assert k.ok("PyBridge/call_ts", big) == f"Python got: Hello {big} from TypeScript"
    # Python -> a TypeScript virtual object: its state is the same one the ingress reads.
    assert k.ok("PyBridge/add_ts", "carol") == 10
    assert k.ok("PyBridge/add_ts", "carol") == 20
    assert k.ok("TsCounter/carol/get") == 20
