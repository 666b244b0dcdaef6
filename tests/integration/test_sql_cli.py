"""The real `restate` CLI 1.7.12 against kinvoke: `restate sql`, `invocations list`,
`invocations describe` (journal details from `entry_json`, the last failure of a failing
invocation), `kv get`, with the real Python SDK behind a real broker.

The CLI is installed pinned by ./scripts/setup.sh (npm) into .kinvoke/restate-cli/; without it
these tests are skipped with a line saying so.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kafka_core.kafka import create_topics
from schemas.settings import Settings
from tests.conftest import free_port
from tests.support.cluster import json_lines
from tests.support.processes import REPO, Component
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration

CLI_VERSION = "1.7.12"
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


def cli_binary() -> Path | None:
    system, machine = platform.system().lower(), platform.machine().lower()
    package = f"restate-{system}-{_ARCH.get(machine, machine)}"
    binary = REPO / ".kinvoke" / "restate-cli" / "node_modules" / "@restatedev" / package / "bin" / "restate"
    return binary if binary.exists() else None


@dataclass
class Kinvoke:
    admin: str
    ingress: str
    client: httpx.Client
    cli: Path
    home: Path
    processor: Component

    def restate(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run the CLI (`env`: more environment variables); its stdout and stderr (exit code 0
        asserted)."""
        done = self.restate_result(*args, env=env)
        out = done.stdout + "\n--- stderr ---\n" + done.stderr
        assert done.returncode == 0, f"restate {' '.join(args)} exited {done.returncode}:\n{out}"
        return out

    def restate_result(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI; whatever it did (for commands expected to fail)."""
        extra = env or {}
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RESTATE_")},
            "RESTATE_ADMIN_URL": self.admin,
            "RESTATE_INGRESS_URL": self.ingress,
            "RESTATE_CLI_CONFIG_HOME": str(self.home),
            "NO_COLOR": "1",
            "TERM": "dumb",
            **extra,
        }
        return subprocess.run([str(self.cli), *args], env=env, capture_output=True, text=True, timeout=60)

    def call(self, path: str, body: object) -> httpx.Response:
        return self.client.post(
            f"{self.ingress}/{path}",
            content=json.dumps(body),
            headers={"content-type": "application/json"},
            timeout=60,
        )

    def query(self, sql: str) -> list[dict]:
        accept = {"accept": "application/json"}
        r = self.client.post(f"{self.admin}/query", json={"query": sql}, headers=accept)
        assert r.status_code == 200, r.text
        rows: list[dict] = r.json()["rows"]
        return rows

    def until(self, sql: str, check: object, what: str, timeout_s: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while not check(rows := self.query(sql)):  # type: ignore[operator]
            assert time.monotonic() < deadline, f"{what}: {rows}"
            time.sleep(0.2)
        return rows


@pytest.fixture
def kinvoke(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Kinvoke]:
    cli = cli_binary()
    if cli is None:
        pytest.skip(
            f"the restate CLI {CLI_VERSION} is not installed in .kinvoke/restate-cli/ "
            "(./scripts/setup.sh installs it with npm)"
        )
    admin_port, ingress_port = free_port(), free_port()
    env = {
        "KINVOKE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KINVOKE_TOPIC_PREFIX": topic_prefix,
        "KINVOKE_PARTITIONS": "4",
        "KINVOKE_ADMIN_PORT": str(admin_port),
        "KINVOKE_INGRESS_PORT": str(ingress_port),
        "KINVOKE_STATE_DIR": str(tmp_path / "state"),
    }
    create_topics(Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, partitions=4))
    parts = [
        Component("admin", env, tmp_path, admin_port),
        Component("ingress", env, tmp_path, ingress_port),
        Component("processor", env, tmp_path),
    ]
    home = tmp_path / "restate-cli-home"
    home.mkdir()
    try:
        for c in parts:
            c.start()
        with run_sdk_deployment(log=tmp_path / "sdk.log") as uri, httpx.Client(timeout=30) as client:
            admin, ingress = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{ingress_port}"
            k = Kinvoke(admin, ingress, client, cli, home, parts[2])
            assert client.post(f"{k.admin}/deployments", json={"uri": uri}).status_code == 201
            deadline = time.monotonic() + 30
            while "Failing" not in client.get(f"{k.ingress}/restate/health").json()["services"]:
                assert time.monotonic() < deadline, "the ingress did not learn the services"
                time.sleep(0.1)
            yield k
    finally:
        for c in parts:
            c.stop()


def test_the_restate_cli_reads_kinvoke(kinvoke: Kinvoke) -> None:
    k = kinvoke
    whoami = k.restate("whoami")
    assert "Supported admin API  [2,3,4]" in whoami and "is healthy" in whoami

    greet = k.call("Greeter/greet", "Alice")
    steps = k.call("Greeter/steps", 5)
    called = k.call("Caller/call_greet", "Dave")
    terminal = k.call("Failing/terminal", "boom")
    assert k.call("Counter/k1/add", 3).json() == 3
    assert (greet.status_code, steps.status_code, called.status_code, terminal.status_code) == (
        200,
        200,
        200,
        418,
    )
    greet_id, steps_id = greet.headers["x-restate-id"], steps.headers["x-restate-id"]
    called_id, terminal_id = called.headers["x-restate-id"], terminal.headers["x-restate-id"]
    flaky = k.call("Failing/flaky/send", "boom").json()["invocationId"]
    # Failed and waiting to retry: after four failures the next retry is 4 s away.
    k.until(
        f"SELECT retry_count FROM sys_invocation WHERE id = '{flaky}'",
        lambda rows: rows and rows[0].get("retry_count", 0) >= 4,
        "the flaky invocation failing",
    )

    sql = k.restate("sql", "select id, target, status from sys_invocation order by created_at limit 5")
    assert re.search(rf"{greet_id}\s+Greeter/greet\s+completed", sql), sql
    assert "5 rows. Query took" in sql

    listed = k.restate("invocations", "list")
    assert flaky in listed and greet_id not in listed  # only what is not completed
    assert re.search(r"Target:\s+Failing/flaky", listed), listed
    assert "Showing 1/1 invocations." in listed

    # The failing invocation: its last failure as the SDK reported it (message and stack trace).
    for _ in range(5):  # a retry that is due shows as running; the next failure makes it back off
        described = k.restate("invocations", "describe", flaky)
        if "backing-off" in described:
            break
        time.sleep(0.5)
    assert re.search(r"Status:\s+backing-off\s+\(.*Retried \d+ time\(s\)", described), described
    assert "Error:" in described
    assert "[500 Internal] RuntimeError('flaky: boom')" in described
    assert "Traceback (most recent call last):" in described
    assert 'raise RuntimeError(f"flaky: {message}")' in described
    assert re.search(r"Caused by:\s+UNKNOWN", described)  # as on Restate: no related entry (V1 only)
    assert "#0 [" in described and "Command: Input" in described

    # Journals: the CLI renders details from entry_json.
    call_journal = k.restate("invocations", "describe", called_id)
    assert "completed with success" in call_journal
    assert re.search(r"#1 \[.*\] Command: Call Greeter/greet inv_1\w+", call_journal), call_journal
    assert "Notification: CallInvocationId" in call_journal and "Notification: Call" in call_journal
    steps_journal = k.restate("invocations", "describe", steps_id)
    assert "Command: Run [step-1]" in steps_journal and "Notification: Run" in steps_journal
    failed = k.restate("invocations", "describe", terminal_id)
    assert "completed with failure" in failed and "[418] boom" in failed

    state = k.restate("kv", "get", "Counter", "k1")
    assert re.search(r"count\s+3", state), state
    status = k.restate("services", "status", "Failing")
    assert re.search(r"flaky\s+-\s+-\s+-\s+(-|1)\s+(-|1)\s+-\s+" + flaky, status), status
    everything = k.restate("invocations", "list", "--all")
    assert all(i in everything for i in (greet_id, steps_id, called_id, terminal_id, flaky))

    # The processor logged each failed attempt with what the SDK said.
    failures = [
        e
        for e in json_lines(k.processor.log_text())
        if e.get("event") == "attempt.ended" and e.get("invocation_id") == flaky
    ]
    assert failures and all(e["level"] == "warning" for e in failures)
    assert failures[0]["target"] == "Failing/flaky" and failures[0]["deployment"].startswith("dp_")
    assert failures[0]["code"] == 500 and failures[0]["error"] == "RuntimeError('flaky: boom')"
    assert failures[0]["stack"].startswith("Traceback (most recent call last):")

    # `invocations kill` finds the invocation with SQL, then kills it.
    killed = k.restate("invocations", "kill", "--yes", flaky)
    assert flaky in killed and "Killed 1 invocations" in killed
    k.until(
        f"SELECT completion_failure FROM sys_invocation WHERE id = '{flaky}'",
        lambda rows: rows and rows[0].get("completion_failure") == "[409] killed",
        "the kill",
    )
    assert "Showing 0/0 invocations" in k.restate("invocations", "list")
