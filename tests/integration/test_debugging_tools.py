"""The debugging commands on a real stack (Apache Kafka from the session, admin, ingress, a
processor, the example SDK services): `kinvoke replay --invocation` on an invocation whose
attempts fail, `kinvoke topics tail` of `commands` and of the DLQ, and their one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from kafka_core.kafka import create_topics
from schemas.ids import InvocationId
from schemas.partitioner import partition_of, routing_key
from schemas.settings import Settings
from tests.conftest import free_port
from tests.support.processes import REPO, Component
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration

PARTITIONS = 4
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
T = TypeVar("T")


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    ingress: str
    components: list[Component]
    sdk_log: Path

    def logs(self) -> str:
        parts = [f"--- {c.name}:\n{c.log_text()[-4000:]}" for c in self.components]
        sdk = self.sdk_log.read_text(errors="replace")[-2000:] if self.sdk_log.exists() else ""
        return "\n".join([*parts, f"--- deployment:\n{sdk}"])

    def kinvoke(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kinvoke.cli", *args],
            cwd=REPO,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def until(self, what: str, probe: Callable[[], T | None], timeout_s: float = 60.0) -> T:
        """Poll `probe` until it returns something (truthy); fails with the components' logs."""
        deadline = time.monotonic() + timeout_s
        while True:
            for c in self.components:
                assert c.proc is not None and c.proc.poll() is None, f"{c.name} exited\n{self.logs()}"
            found = probe()
            if found:
                return found
            assert time.monotonic() < deadline, (
                f"timed out after {timeout_s}s waiting for {what}\n{self.logs()}"
            )
            time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("debugging")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    admin_port, ingress_port = free_port(), free_port()
    env = {
        "KINVOKE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KINVOKE_TOPIC_PREFIX": prefix,
        "KINVOKE_PARTITIONS": str(PARTITIONS),
        "KINVOKE_ADMIN_PORT": str(admin_port),
        "KINVOKE_INGRESS_PORT": str(ingress_port),
        "KINVOKE_PROCESSOR_GROUP_ID": f"{prefix}-processor",
        "KINVOKE_STATE_DIR": str(base / "state"),
    }
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    create_topics(settings)
    components = [
        Component("admin", env, base, admin_port),
        Component("ingress", env, base, ingress_port),
        Component("processor", env, base),
    ]
    cli_env = {**os.environ, **env, "PYTHONPATH": str(REPO), "KINVOKE_LOG_FORMAT": "json"}
    s = Stack(settings, cli_env, f"http://127.0.0.1:{ingress_port}", components, base / "deployment.log")
    with ExitStack() as stop:
        for c in components:
            stop.callback(c.stop)
            c.start(60)
        uri = stop.enter_context(run_sdk_deployment(log=s.sdk_log))
        reg = httpx.post(f"http://127.0.0.1:{admin_port}/deployments", json={"uri": uri}, timeout=30)
        assert reg.status_code == 201, reg.text

        def knows_failing() -> bool | None:
            try:
                health = httpx.get(f"{s.ingress}/restate/health", timeout=5)
            except httpx.HTTPError:
                return None
            return True if health.status_code == 200 and "Failing" in health.json()["services"] else None

        s.until("the ingress to know the registered services", knows_failing)
        yield s


def _send(stack: Stack, path: str, body: object) -> str:
    r = httpx.post(f"{stack.ingress}/{path}/send", json=body, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["invocationId"])


def _events(stack: Stack, invocation_id: str) -> list[dict[str, Any]]:
    out = stack.kinvoke("replay", "--invocation", invocation_id, "--json")
    if out.returncode != 0:
        return []
    return [json.loads(line) for line in out.stdout.splitlines()]


def _failed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if (e["details"].get("outcome") or {}).get("type") == "AttemptFailed"]


def test_replay_invocation_prints_the_timeline_of_failed_attempts(stack: Stack) -> None:
    inv = _send(stack, "Failing/flaky", "boom")

    def two_failures() -> list[dict[str, Any]] | None:
        events = _events(stack, inv)
        return events if len(_failed(events)) >= 2 else None

    events = stack.until("two failed attempts", two_failures)
    assert events[0]["command"] == "Invoke"
    assert events[0]["partition"] == partition_of(InvocationId.parse(inv).partition_key, PARTITIONS)
    assert events[0]["journal"][0]["type"] == "InputCommand"
    assert events[0]["journal"][0]["value"] == "boom"
    first, second = _failed(events)[:2]
    for n, failed in enumerate((first, second), start=1):
        outcome = failed["details"]["outcome"]
        assert failed["details"]["attempt"] == n
        assert outcome["code"] == 500 and "flaky: boom" in outcome["message"], outcome
        assert "RuntimeError: flaky: boom" in outcome["stacktrace"]
        assert failed["status"]["retry_count"] == n
        assert re.fullmatch(ISO, failed["status"]["next_retry_at"])
        assert re.fullmatch(ISO, failed["at"])

    human = stack.kinvoke("replay", "--invocation", inv)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert (
        lines[0].startswith(f"{inv}: ") and f"commands on {stack.settings.topic_prefix}.commands[" in lines[0]
    )
    assert re.fullmatch(ISO + r'  @\d+  Invoke Failing/flaky by INGRESS, argument "boom"', lines[1]), lines[1]
    assert any(re.fullmatch(r"    journal\[0\] InputCommand \{.*\"value\": \"boom\"\}", ln) for ln in lines)
    failed_lines = [
        ln for ln in lines if re.search(r"AttemptEnded attempt \d+ on dp_\w+: failed \[500\]", ln)
    ]
    assert len(failed_lines) >= 2 and all("flaky: boom" in ln for ln in failed_lines), human.stdout
    assert "      RuntimeError: flaky: boom" in lines
    assert any(re.fullmatch(r"    next: run attempt 2 at " + ISO, ln) for ln in lines), human.stdout


def test_replay_invocation_shows_the_journal_of_a_completed_invocation(stack: Stack) -> None:
    r = httpx.post(f"{stack.ingress}/Greeter/steps", json=5, timeout=60)
    assert r.status_code == 200 and r.json() == 11, r.text
    events = _events(stack, r.headers["x-restate-id"])
    entries = [(j["type"], j.get("name"), j.get("value")) for e in events for j in e.get("journal", [])]
    assert entries[0] == ("InputCommand", None, 5)
    assert [name for ty, name, _ in entries if ty == "RunCommand"] == ["step-1", "step-2", "step-3"]
    assert [v for ty, _, v in entries if ty == "RunCompletionNotification"] == [6, 8, 11]
    assert entries[-1] == ("OutputCommand", None, 11)
    assert events[-1]["status"]["phase"] == "COMPLETED" and events[-1]["status"]["result"] == {"value": 11}


def test_topics_tail_decodes_commands_and_dead_letters(stack: Stack) -> None:
    prefix = stack.settings.topic_prefix
    inv = _send(stack, "Greeter/greet", "Tail")
    pk = InvocationId.parse(inv).partition_key
    partition = partition_of(pk, PARTITIONS)

    def invoke_record() -> dict[str, Any] | None:
        out = stack.kinvoke(
            "topics", "tail", "commands", "--partition", str(partition), "--from-beginning", "--json"
        )
        assert out.returncode == 0, out.stderr
        records = [json.loads(line) for line in out.stdout.splitlines()]
        return next(
            (r for r in records if r["value"].get("invocation_id") == inv and r["kind"] == "Invoke"), None
        )

    record = stack.until("the Invoke on commands", invoke_record)
    assert record["topic"] == f"{prefix}.commands" and record["partition"] == partition
    assert record["key"] == "0x" + routing_key(pk).hex()
    assert re.fullmatch(ISO, record["timestamp"]) and re.fullmatch(ISO, record["value"]["timestamp"])
    assert record["value"]["argument"] == "Tail"
    assert record["value"]["target"]["service"] == "Greeter"

    human = stack.kinvoke(
        "topics", "tail", f"{prefix}.commands", "--partition", str(partition), "--from-beginning"
    )
    assert human.returncode == 0, human.stderr
    line = next(ln for ln in human.stdout.splitlines() if inv in ln and " Invoke " in ln)
    assert re.match(
        rf"{re.escape(prefix)}\.commands\[{partition}\]@\d+ {ISO} key=0x{routing_key(pk).hex()} Invoke ", line
    )
    assert '"argument": "Tail"' in line

    one = stack.kinvoke("topics", "tail", "commands", "--from-beginning", "--max", "1", "--json")
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 1, one

    # A record that is not a command: dead-lettered with the reason in its headers.
    producer = Producer({"bootstrap.servers": stack.settings.bootstrap_servers})
    producer.produce(
        f"{prefix}.commands", key=b"\x00" * 8, value=b"not a command", headers=[("trace", b"t1")], partition=0
    )
    assert producer.flush(10) == 0

    def dead_letter() -> dict[str, Any] | None:
        out = stack.kinvoke("topics", "tail", "commands.dlq", "--from-beginning", "--json")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        return json.loads(lines[-1]) if lines else None

    dlq = stack.until("the dead letter", dead_letter)
    assert dlq["topic"] == f"{prefix}.commands.dlq" and dlq["kind"] == "undecodable"
    assert dlq["value"]["raw"] == "not a command"
    assert dlq["key"] == "0x0000000000000000"
    assert dlq["headers"] == {"trace": "t1"}
    assert dlq["dlq"]["topic"] == f"{prefix}.commands" and dlq["dlq"]["partition"] == "0"
    assert dlq["dlq"]["reason"].startswith("not a kinvoke command")
    human = stack.kinvoke("topics", "tail", "commands.dlq", "--from-beginning")
    block = human.stdout.splitlines()
    assert block[-2] == (
        f"    dead-lettered from {prefix}.commands[0]@{dlq['dlq']['offset']}: {dlq['dlq']['reason']}"
    ), human.stdout
    assert block[-1] == '    headers {"trace": "t1"}'


def _one_line(out: subprocess.CompletedProcess[str], expected: str) -> None:
    assert out.returncode == 1, out
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.fullmatch(expected, out.stderr.strip()), out.stderr


def test_errors_are_one_line(stack: Stack) -> None:
    prefix = re.escape(stack.settings.topic_prefix)
    _one_line(
        stack.kinvoke("topics", "tail", "commands", "--partition", "99"),
        rf"kinvoke topics tail: topic {prefix}\.commands has 4 partitions \(0-3\): no partition 99",
    )
    _one_line(
        stack.kinvoke("replay", "--partition", "7"),
        rf"kinvoke replay: topic {prefix}\.commands has 4 partitions \(0-3\): no partition 7",
    )
    unknown = InvocationId.generate(12345, 1_700_000_000_000, 1)
    _one_line(
        stack.kinvoke("replay", "--invocation", str(unknown)),
        rf"kinvoke replay: no command of {unknown} in {prefix}\.commands\[\d\], its partition",
    )
    _one_line(stack.kinvoke("replay", "--invocation", "inv_1nope"), r"kinvoke replay: bad invocation id .*")
    # A mistyped prefix: named, and not created by asking (the broker auto-creates topics).
    _one_line(
        stack.kinvoke("topics", "tail", "commands", KINVOKE_TOPIC_PREFIX="mistyped"),
        r"kinvoke topics tail: no topic mistyped\.commands on .*",
    )
    admin = AdminClient({"bootstrap.servers": stack.settings.bootstrap_servers})
    assert "mistyped.commands" not in admin.list_topics(timeout=10).topics
    # The broker down: KINVOKE_BOOTSTRAP_SERVERS at a closed port.
    closed = f"127.0.0.1:{free_port()}"
    for args in (["topics", "tail", "commands"], ["replay", "--invocation", str(unknown)], ["replay"]):
        started = time.monotonic()
        out = stack.kinvoke(*args, KINVOKE_BOOTSTRAP_SERVERS=closed)
        _one_line(
            out,
            rf"kinvoke {args[0]}.*: cannot reach Kafka at {closed} \(KINVOKE_BOOTSTRAP_SERVERS\): "
            "Connection refused",
        )
        assert time.monotonic() - started < 30
