"""`kinvoke dev` (the README's first command) starts everything and Ctrl-C stops all of it: with
Apache Kafka (the default) and with the emulator (`--broker local`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kinvoke.broker import BrokerError, check_kafka_libs, find_java
from tests.conftest import free_port
from tests.support.processes import REPO, wait_for_port

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


@pytest.mark.parametrize("broker", ["kafka", "local"])
def test_dev_starts_everything_and_ctrl_c_stops_it(broker: str, tmp_path: Path) -> None:
    if broker == "kafka" and os.environ.get("KINVOKE_TEST_BROKER") == "local":
        try:  # the emulator was asked for: maybe there is no Java here
            find_java()
            check_kafka_libs()
        except BrokerError as e:
            pytest.skip(f"KINVOKE_TEST_BROKER=local and Apache Kafka cannot run here: {e}")
    ports = {"broker": free_port(), "admin": free_port(), "ingress": free_port()}
    data_dir = tmp_path / broker
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KINVOKE_BROKER_PORT": str(ports["broker"]),
        "KINVOKE_BROKER_DATA_DIR": str(data_dir),
        "KINVOKE_ADMIN_PORT": str(ports["admin"]),
        "KINVOKE_INGRESS_PORT": str(ports["ingress"]),
        "KINVOKE_PROCESSOR_GROUP_ID": "dev-test",
        "KINVOKE_STATE_DIR": str(tmp_path / "state"),
    }
    for name in ("KINVOKE_BOOTSTRAP_SERVERS", "KINVOKE_BROKER", "KINVOKE_RECOVERY_BARRIER"):
        env.pop(name, None)
    # Apache Kafka is the default; the emulator only when asked for.
    cmd = [sys.executable, "-m", "kinvoke.cli", "dev"] + (["--broker", "local"] if broker == "local" else [])
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # A JVM on a loaded machine: `kinvoke dev` itself waits up to 60 s for the broker.
        wait_for_port("127.0.0.1", ports["admin"], 120, proc)
        wait_for_port("127.0.0.1", ports["ingress"], 60, proc)
        assert httpx.get(f"http://127.0.0.1:{ports['admin']}/health").status_code == 200
        version = httpx.get(f"http://127.0.0.1:{ports['admin']}/version").json()
        assert version["ingress_endpoint"] == f"http://127.0.0.1:{ports['ingress']}/"
        assert httpx.get(f"http://127.0.0.1:{ports['ingress']}/restate/health").json() == {"services": []}
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
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = proc.wait(60)
    log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()
    deadline = time.monotonic() + 10
    while any(_listening(p) for p in ports.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_listening(p) for p in ports.values()), "something kept listening after Ctrl-C"
