"""`kinvoke dev` (the README's first command) starts everything and Ctrl-C stops all of it: with
Apache Kafka (the default) and with the emulator (`--broker local`)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kinvoke.broker import BrokerError, check_kafka_libs, find_java
from tests.conftest import free_port
from tests.support.processes import REPO

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _components_env(pid: int) -> dict[str, dict[str, str]]:
    """The environments of the `kinvoke.cli <component>` children of `pid` (Linux /proc)."""
    return {name: env for name, (_, env) in _components(pid).items()}


def _components(pid: int) -> dict[str, tuple[int, dict[str, str]]]:
    """The `kinvoke.cli <component>` children of `pid`: their pids and environments (Linux /proc)."""
    envs = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != pid:
                continue
            argv = (stat.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
            raw = (stat.parent / "environ").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if "kinvoke.cli" in argv:
            component = argv[argv.index("kinvoke.cli") + 1]
            envs[component] = (
                int(stat.parent.name),
                dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv),
            )
    return envs


BANNER = "kinvoke dev: admin http://"


@dataclass
class Dev:
    """A `kinvoke dev` started by a test, its output (stdout and stderr) in `log_path`."""

    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    env: dict[str, str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 180.0) -> str:
        """Until the banner (printed once everything serves); fails with the log if `kinvoke dev`
        exits or the bound passes. A JVM on a loaded machine: `kinvoke dev` waits up to 60 s for
        the broker alone."""
        deadline = time.monotonic() + timeout_s
        while True:
            banner = next((line for line in self.log().splitlines() if line.startswith(BANNER)), None)
            if banner is not None:
                return banner
            assert self.proc.poll() is None, f"kinvoke dev exited with {self.proc.returncode}:\n{self.log()}"
            assert time.monotonic() < deadline, f"no banner after {timeout_s}s:\n{self.log()}"
            time.sleep(0.2)

    def stop(self) -> int:
        """Ctrl-C (SIGINT), and its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"kinvoke dev did not stop within 60s of Ctrl-C:\n{self.log()}") from None


def dev_env(base: Path, broker: str) -> tuple[dict[str, str], dict[str, int]]:
    """The environment of a `kinvoke dev` on free ports with its data under `base`."""
    ports = {"broker": free_port(), "admin": free_port(), "ingress": free_port()}
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KINVOKE_BROKER_PORT": str(ports["broker"]),
        "KINVOKE_BROKER_DATA_DIR": str(base / broker),
        "KINVOKE_ADMIN_PORT": str(ports["admin"]),
        "KINVOKE_INGRESS_PORT": str(ports["ingress"]),
        "KINVOKE_PROCESSOR_GROUP_ID": "dev-test",
        "KINVOKE_STATE_DIR": str(base / "state"),
    }
    for name in (
        "KINVOKE_BOOTSTRAP_SERVERS",
        "KINVOKE_BROKER",
        "KINVOKE_RECOVERY_BARRIER",
        "KINVOKE_TOPIC_PREFIX",
    ):
        env.pop(name, None)
    return env, ports


def dev_command(broker: str) -> list[str]:
    # Apache Kafka is the default; the emulator only when asked for.
    return [sys.executable, "-m", "kinvoke.cli", "dev"] + (["--broker", "local"] if broker == "local" else [])


def start_dev(base: Path, broker: str) -> Dev:
    base.mkdir(parents=True, exist_ok=True)
    env, ports = dev_env(base, broker)
    log_path = base / "dev.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(dev_command(broker), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Dev(proc, ports, env, log_path)


def skip_without_kafka(broker: str) -> None:
    if broker == "kafka" and os.environ.get("KINVOKE_TEST_BROKER") == "local":
        try:  # the emulator was asked for: maybe there is no Java here
            find_java()
            check_kafka_libs()
        except BrokerError as e:
            pytest.skip(f"KINVOKE_TEST_BROKER=local and Apache Kafka cannot run here: {e}")


@pytest.mark.parametrize("broker", ["kafka", "local"])
def test_dev_starts_everything_and_ctrl_c_stops_it(broker: str, tmp_path: Path) -> None:
    skip_without_kafka(broker)
    dev = start_dev(tmp_path, broker)
    proc, ports, data_dir = dev.proc, dev.ports, tmp_path / broker
    try:
        # The banner comes once everything serves: nothing to wait for after it.
        banner = dev.wait_ready()
        assert httpx.get(f"http://127.0.0.1:{ports['admin']}/health").status_code == 200
        version = httpx.get(f"http://127.0.0.1:{ports['admin']}/version").json()
        assert version["ingress_endpoint"] == f"http://127.0.0.1:{ports['ingress']}/"
        health = httpx.get(f"http://127.0.0.1:{ports['ingress']}/restate/health").json()
        assert health["services"] == [] and health["registry"]["current"] is True
        # The banner names the processor's metrics; its /tasks has every partition running.
        metrics_url = re.search(r"processor (http://127\.0\.0\.1:\d+)/metrics", banner)
        assert metrics_url is not None, banner
        deadline = time.monotonic() + 60  # the group owns every partition; tasks may still restore
        while True:
            tasks = httpx.get(f"{metrics_url[1]}/tasks").json()
            if {t["state"] for t in tasks["tasks"]} == {"RUNNING"}:
                break
            assert time.monotonic() < deadline, f"tasks not all RUNNING: {tasks}"
            time.sleep(0.2)
        assert tasks["partitions"], tasks
        assert _listening(ports["broker"])
        components = _components_env(proc.pid)
        assert sorted(components) == ["admin", "ingress", "processor"]
        for child_env in components.values():
            assert child_env["KINVOKE_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{ports['broker']}"
            # Only the emulator needs the processor's recovery barrier.
            assert child_env.get("KINVOKE_RECOVERY_BARRIER") == ("1" if broker == "local" else None)
        kafka_state = data_dir / "kinvoke-kafka.json"
        if broker == "kafka":
            assert (data_dir / "logs" / "meta.properties").exists()  # Apache Kafka's storage
            ports["controller"] = json.loads(kafka_state.read_text())["controller_port"]
            assert _listening(ports["controller"])
        else:
            assert not kafka_state.exists()
        # `kinvoke dev` supervises its components: one that dies is started again.
        crashed = _components(proc.pid)["processor"][0]
        os.kill(crashed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _components(proc.pid).get("processor", (crashed, {}))[0] == crashed:
            assert proc.poll() is None and time.monotonic() < deadline, dev.log()
            time.sleep(0.1)
    finally:
        code = dev.stop()
    assert code == 0, dev.log()
    deadline = time.monotonic() + 10
    while any(_listening(p) for p in ports.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_listening(p) for p in ports.values()), "something kept listening after Ctrl-C"
